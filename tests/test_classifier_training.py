"""The classifier through DefaultTrainer: its mapper, its evaluator and a segmentation
checkpoint."""

import json
import os

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model
from tiny_opts import TINY_CLASSIFIER  # tests/, on sys.path under pytest

from ct_lesion_d2.data.datasets import register_ct_classification
from ct_lesion_d2.data.mappers import ClassificationDatasetMapper
from ct_lesion_d2.data.synthetic import generate_synthetic_slices
from ct_lesion_d2.engine import CTLesionTrainer
from ct_lesion_d2.model_zoo import get_config

NAME = "ct_lesion_test_cls_synthetic"
CLASSES = ["Control", "Common Pneumonia", "COVID-19"]
SMALL = list(TINY_CLASSIFIER)


@pytest.fixture
def synthetic_classes(tmp_path):
    slices = generate_synthetic_slices(str(tmp_path / "slices"), 6, size=128, progress=False)
    records = [
        {
            "file_name": str(tmp_path / "slices" / r["file_name"]),
            "image_id": i,
            "class_id": r["class_id"],
        }
        for i, r in enumerate(slices)
    ]
    register_ct_classification(NAME, lambda: records, CLASSES)
    yield records
    DatasetCatalog.remove(NAME)
    MetadataCatalog.remove(NAME)


@pytest.fixture(scope="module")
def segmenter_path(tmp_path_factory):
    """A random-weight R18_T1 segmentation checkpoint (seed 0) for the classifiers' detector."""
    folder = tmp_path_factory.mktemp("segmenter")
    torch.manual_seed(0)
    segmenter = build_model(get_config("mask_rcnn_R18_T1", ["MODEL.DEVICE", "cpu"]))
    DetectionCheckpointer(segmenter, save_dir=str(folder)).save("segmenter")
    return str(folder / "segmenter.pth")


def classifier_cfg(tmp_path, segmenter_path, *opts):
    return get_config(
        "classifier_R18_T1",
        SMALL
        + [
            "MODEL.CT_CLASSIFIER.SEGMENTATION_WEIGHTS",
            segmenter_path,
            "DATASETS.TRAIN",
            f"('{NAME}',)",
            "DATASETS.TEST",
            f"('{NAME}',)",
            "OUTPUT_DIR",
            str(tmp_path / "out"),
            "SOLVER.CHECKPOINT_PERIOD",
            "100",
            *opts,
        ],
    )


def test_classifier_trains_and_evaluates(synthetic_classes, segmenter_path, tmp_path):
    cfg = classifier_cfg(
        tmp_path,
        segmenter_path,
        "SOLVER.IMS_PER_BATCH",
        "2",
        "SOLVER.MAX_ITER",
        "3",
        "SOLVER.BASE_LR",
        "0.001",
    )
    trainer = CTLesionTrainer(cfg)
    trainer.resume_or_load(resume=False)
    detector_weight = trainer.model.roi_heads.box_head.fc1.weight.detach().clone()
    saved = torch.load(segmenter_path)["model"]["roi_heads.box_head.fc1.weight"]
    assert torch.equal(detector_weight, saved)
    trainer.train()
    metrics = trainer.eval_results()["classification"]
    assert 0.0 <= metrics["accuracy"] <= 100.0
    assert set(f"sensitivity/{c}" for c in CLASSES) <= set(metrics)
    out = tmp_path / "out" / "inference" / NAME
    with open(out / "classification_metrics.json") as f:
        saved = json.load(f)
    matrix = saved["confusion_matrix"]
    assert len(matrix) == 3 and sum(map(sum, matrix)) == len(synthetic_classes)
    assert os.path.isfile(out / "confusion_matrix.png")
    # the detector stayed frozen through training
    assert torch.equal(trainer.model.roi_heads.box_head.fc1.weight, detector_weight)


def cached_cfg(tmp_path, segmenter_path, *opts):
    return classifier_cfg(
        tmp_path,
        segmenter_path,
        "MODEL.CT_CLASSIFIER.TRAIN_BN_AFFINE",
        "False",
        "MODEL.CT_CLASSIFIER.CACHE_ROI_BATCHES",
        "True",
        "INPUT.RANDOM_FLIP",
        "none",
        "SOLVER.IMS_PER_BATCH",
        "3",
        "SOLVER.MAX_ITER",
        "4",
        "SOLVER.BASE_LR",
        "0.001",
        *opts,
    )


def test_cached_and_uncached_modes_give_the_same_s_inputs(
    synthetic_classes, segmenter_path, tmp_path
):
    cfg = cached_cfg(tmp_path, segmenter_path)
    trainer = CTLesionTrainer(cfg)
    trainer.resume_or_load(resume=False)
    cached = {r["file_name"]: r for r in next(iter(trainer.data_loader))}
    assert len(cached) == 3
    # the uncached training path on the same images: capture what module S receives
    model = trainer.model
    mapper = ClassificationDatasetMapper(cfg, True)
    inputs = [mapper(r) for r in synthetic_classes if r["file_name"] in cached]
    seen = []
    handle = model.classifier.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    model.train()
    loss_uncached = model(inputs)["loss_cls_image"]
    handle.remove()
    rows = torch.stack([cached[x["file_name"]]["roi_rows"] for x in inputs]).flatten(1)
    assert rows.shape == (3, 5 * cfg.MODEL.CT_CLASSIFIER.BATCH_DETECTIONS)
    assert torch.allclose(seen[0], rows, atol=1e-5)
    assert rows.abs().sum() > 0
    # and the loss the cached path computes from them is the same
    cached_inputs = [cached[x["file_name"]] for x in inputs]
    assert torch.allclose(model(cached_inputs)["loss_cls_image"], loss_uncached, atol=1e-6)


def test_cached_mode_trains_only_module_s(synthetic_classes, segmenter_path, tmp_path):
    trainer = CTLesionTrainer(cached_cfg(tmp_path, segmenter_path))
    trainer.resume_or_load(resume=False)
    model = trainer.model
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    trainer.train()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("classifier.") for k in changed)
    assert "accuracy" in trainer.eval_results()["classification"]


def test_cache_refuses_trainable_batchnorm(tmp_path):
    # refused where the trainer builds its loader, before any detector runs
    cfg = cached_cfg(tmp_path, "", "MODEL.CT_CLASSIFIER.TRAIN_BN_AFFINE", "True")
    with pytest.raises(ValueError, match="TRAIN_BN_AFFINE"):
        CTLesionTrainer.build_train_loader(cfg)


def test_cached_loader_builds_no_model(synthetic_classes, segmenter_path, tmp_path):
    # the rows are computed by the trainer's own model on the first batch, never by a second
    loader = CTLesionTrainer.build_train_loader(cached_cfg(tmp_path, segmenter_path))
    assert loader.roi_batch_cache.model is None
    with pytest.raises(ValueError, match="RoI-batch cache has no model"):
        next(iter(loader))
