"""Training on several sources at once: per-dataset repeat factors, the CT augmentations of the
real-CT recipe, and one training step over both real sources."""

import os
import shutil
from collections import Counter

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BoxMode

from ct_lesion_d2.data.augmentation import (
    CLAHETransform,
    GammaTransform,
    RandomCLAHE,
    build_ct_augmentation,
)
from ct_lesion_d2.data.build import build_resumable_train_loader, load_train_dicts
from ct_lesion_d2.data.converters import convert_layout
from ct_lesion_d2.data.datasets import register_ct_lesion_coco
from ct_lesion_d2.data.mappers import CTLesionDatasetMapper
from ct_lesion_d2.engine import CTLesionTrainer
from ct_lesion_d2.model_zoo import get_config

RECIPE = "mask_rcnn_R18_T1_FPN1_realct_cpu.yaml"


def _register(name, records):
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(thing_classes=["Lesion"])


@pytest.fixture
def two_fake_sources():
    small = [
        {
            "file_name": f"small_{i}.png",
            "image_id": i,
            "height": 8,
            "width": 8,
            "annotations": [
                {"bbox": [0, 0, 4, 4], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0}
            ],
        }
        for i in range(5)
    ]
    large = [
        {
            "file_name": f"large_{i}.png",
            "image_id": 100 + i,
            "height": 8,
            "width": 8,
            "annotations": [
                {"bbox": [0, 0, 4, 4], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0}
            ],
        }
        for i in range(20)
    ]
    names = ("test_ms_small", "test_ms_large")
    for name, records in zip(names, (small, large)):
        _register(name, records)
    yield names
    for name in names:
        DatasetCatalog.pop(name)
        MetadataCatalog.pop(name)


def test_dataset_repeat_factors_follow_the_sources(two_fake_sources):
    cfg = get_config(
        RECIPE,
        ["DATASETS.TRAIN", str(two_fake_sources), "DATALOADER.CT_DATASET_REPEAT", "(4.0, 1.0)"],
    )
    records, factors = load_train_dicts(cfg)
    assert [r["file_name"][:5] for r in records] == ["small"] * 5 + ["large"] * 20
    assert factors == [4.0] * 5 + [1.0] * 20
    # the sampler draws each small-source slice about 4x as often as a large-source one
    loader = build_resumable_train_loader(
        cfg, mapper=lambda r: r["file_name"], seed=0, aspect_ratio_grouping=False, num_workers=0
    )
    counts = Counter(name[:5] for batch, _ in zip(loader, range(400)) for name in batch)
    per_slice = {k: counts[k] / n for k, n in (("small", 5), ("large", 20))}
    assert 3.0 < per_slice["small"] / per_slice["large"] < 5.0, per_slice


def test_without_repeat_factors_the_sources_are_concatenated(two_fake_sources):
    cfg = get_config(
        RECIPE, ["DATASETS.TRAIN", str(two_fake_sources), "DATALOADER.CT_DATASET_REPEAT", "()"]
    )
    records, factors = load_train_dicts(cfg)
    assert len(records) == 25 and factors is None


def test_repeat_factors_must_match_the_sources(two_fake_sources):
    cfg = get_config(
        RECIPE, ["DATASETS.TRAIN", str(two_fake_sources), "DATALOADER.CT_DATASET_REPEAT", "(4.0,)"]
    )
    with pytest.raises(ValueError, match="one positive factor per name of DATASETS.TRAIN"):
        load_train_dicts(cfg)


# ----------------------------------------------------------------------------- augmentations


def _slice_and_mask():
    rng = np.random.default_rng(0)
    image = np.repeat(rng.integers(40, 200, (64, 80), dtype=np.uint8)[:, :, None], 3, axis=2)
    mask = np.zeros((64, 80), np.uint8)
    mask[10:30, 20:50] = 1
    return image, mask


@pytest.mark.parametrize("transform", [GammaTransform(0.7), CLAHETransform(2.0, 8)])
def test_intensity_transforms_change_pixels_not_masks_or_boxes(transform):
    image, mask = _slice_and_mask()
    out = transform.apply_image(image)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert not np.array_equal(out, image)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    assert np.array_equal(transform.apply_segmentation(mask), mask)
    box = np.array([[20.0, 10.0, 50.0, 30.0]])
    assert np.array_equal(transform.apply_box(box), box)


def test_gamma_by_hand():
    image = np.array([[0, 64, 255]], np.uint8)
    # 255 * (64 / 255) ** 0.5 = 127.75 -> 127 after truncation to uint8
    assert GammaTransform(0.5).apply_image(image).tolist() == [[0, 127, 255]]


def test_random_clahe_probability():
    image, _ = _slice_and_mask()
    never, always = RandomCLAHE(prob=0.0), RandomCLAHE(prob=1.0)
    assert isinstance(never.get_transform(image), T.NoOpTransform)
    assert isinstance(always.get_transform(image), CLAHETransform)


def test_augmentations_off_are_detectron2s():
    cfg = get_config("mask_rcnn_R18_T1_FPN1_lesion.yaml")
    ours = build_ct_augmentation(cfg, True)
    theirs = utils.build_augmentation(cfg, True)
    assert [type(a) for a in ours] == [type(a) for a in theirs]


def test_recipe_augmentations_and_test_time_is_resize_only():
    cfg = get_config(RECIPE)
    train_types = [type(a).__name__ for a in build_ct_augmentation(cfg, True)]
    for name in (
        "ResizeShortestEdge",
        "RandomFlip",
        "RandomRotation",
        "RandomContrast",
        "RandomBrightness",
        "RandomGamma",
        "RandomCLAHE",
    ):
        assert name in train_types
    assert train_types.count("RandomFlip") == 2  # horizontal and vertical
    assert [type(a).__name__ for a in build_ct_augmentation(cfg, False)] == ["ResizeShortestEdge"]


def test_rotated_slice_boxes_are_recomputed_from_masks(shared_data, tmp_path):
    source = tmp_path / "src"
    for sub in ("images", "masks"):
        os.makedirs(source / sub)
        shutil.copy(os.path.join(shared_data, "medseg100", sub, "medseg_003.png"), source / sub)
    outputs = convert_layout("binary-folder", str(source), str(tmp_path / "coco"), val_fraction=0)
    name = "test_ms_rotated"
    register_ct_lesion_coco(name, outputs["train"], ["Lesion"])
    try:
        record = DatasetCatalog.get(name)[0]
        cfg = get_config(
            RECIPE, ["INPUT.CT_AUGMENTATION.ROTATION", "30.0", "INPUT.MIN_SIZE_TRAIN", "(256,)"]
        )
        torch.manual_seed(0)
        np.random.seed(3)
        mapped = CTLesionDatasetMapper(cfg, True)(record)
        inst = mapped["instances"]
        assert len(inst) > 0
        # each box is the tight box of its (rotated) mask
        tight = inst.gt_masks.get_bounding_boxes().tensor
        assert torch.allclose(inst.gt_boxes.tensor, tight)
    finally:
        DatasetCatalog.pop(name)
        MetadataCatalog.pop(name)


def test_one_training_step_over_both_real_sources(shared_data, tmp_path):
    names = []
    for key, layout, stems in (
        ("medseg100", "binary-folder", ["medseg_000.png", "medseg_003.png"]),
        ("covid19_ct_seg", "covid19-ct-seg", ["0100.png", "0500.png"]),
    ):
        source = tmp_path / key
        for sub in ("images", "masks"):
            os.makedirs(source / sub)
            for stem in stems:
                shutil.copy(os.path.join(shared_data, key, sub, stem), source / sub)
        if key == "covid19_ct_seg":
            with open(source / "volumes.csv", "w") as f:
                f.write("file,volume\n" + "".join(f"{s},v{i}\n" for i, s in enumerate(stems)))
        outputs = convert_layout(layout, str(source), str(tmp_path / "coco" / key), val_fraction=0)
        names.append(f"test_ms_real_{key}")
        register_ct_lesion_coco(names[-1], outputs["train"], ["Lesion"])
    try:
        cfg = get_config(
            RECIPE,
            [
                "MODEL.DEVICE",
                "cpu",
                "DATASETS.TRAIN",
                str(tuple(names)),
                "DATASETS.TEST",
                "()",
                "DATALOADER.NUM_WORKERS",
                "0",
                "SOLVER.MAX_ITER",
                "2",
                "SOLVER.WARMUP_ITERS",
                "1",
                "INPUT.MIN_SIZE_TRAIN",
                "(256,)",
                "INPUT.MAX_SIZE_TRAIN",
                "256",
                "OUTPUT_DIR",
                str(tmp_path / "out"),
                "SEED",
                "0",
            ],
        )
        trainer = CTLesionTrainer(cfg)
        trainer.resume_or_load(resume=False)
        trainer.train()
        losses = [v for v, _ in trainer.storage.history("total_loss").values()]
        assert len(losses) == 2 and np.isfinite(losses).all()
        record = trainer.data_loader.dataset_dicts
        assert {os.path.basename(r["file_name"]) for r in record} == {
            "medseg_000.png",
            "medseg_003.png",
            "0100.png",
            "0500.png",
        }
    finally:
        for name in names:
            DatasetCatalog.pop(name)
            MetadataCatalog.pop(name)
