"""Test-time augmentation of the lesion segmenter (``TEST.AUG``, Detectron2's
``GeneralizedRCNNWithTTA``) through the trainer and ``tools/train_net.py``."""

import json
import os

import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.env import seed_all_rng
from tiny_opts import TINY_SCHEDULE, TINY_SEGMENTER  # tests/, on sys.path under pytest

from ct_lesion_d2.data.converters import convert_layout
from ct_lesion_d2.data.datasets import register_ct_lesion_coco
from ct_lesion_d2.data.synthetic import generate_synthetic_slices
from ct_lesion_d2.engine import CTLesionPredictor, CTLesionTrainer
from ct_lesion_d2.model_zoo import get_config

NAME = "ct_lesion_test_tta"


@pytest.fixture
def synthetic_lesions(tmp_path):
    generate_synthetic_slices(str(tmp_path / "slices"), 4, size=128, progress=False)
    outputs = convert_layout(
        "two-label-folder", str(tmp_path / "slices"), str(tmp_path / "coco"), min_area=10
    )
    register_ct_lesion_coco(NAME, outputs["train"], ["Lesion"])
    yield NAME
    DatasetCatalog.pop(NAME)
    MetadataCatalog.pop(NAME)


def segmenter(output_dir, aug_opts):
    cfg = get_config(
        "mask_rcnn_R18_T1_FPN1_realct_cpu.yaml",
        [*TINY_SEGMENTER, "OUTPUT_DIR", output_dir, "DATASETS.TEST", f"('{NAME}',)", *aug_opts],
    )
    seed_all_rng(0)
    return cfg, CTLesionTrainer.build_model(cfg).eval()


def plain_and_tta(output_dir, min_sizes, flip):
    """The plain evaluation and the TTA evaluation of one untrained segmenter."""
    aug = ["TEST.AUG.MIN_SIZES", min_sizes, "TEST.AUG.FLIP", str(flip)]
    cfg, model = segmenter(output_dir, aug)
    with torch.no_grad():
        return CTLesionTrainer.test(cfg, model), CTLesionTrainer.test_with_TTA(cfg, model)


def test_single_view_tta_reproduces_plain_evaluation(synthetic_lesions, tmp_path):
    # One view (the test size, no flip): the merge and the mask re-run on the merged boxes must
    # give back the plain model's detections, so every metric is the same.
    plain, tta = plain_and_tta(str(tmp_path / "out"), "(128,)", False)
    assert set(tta) == {"bbox_TTA", "segm_TTA", "lesion_TTA"}
    assert plain["lesion"]["dice"] > 0  # the untrained model predicts some lesion pixels
    for task in ("bbox", "segm", "lesion"):
        for metric, value in plain[task].items():
            assert tta[task + "_TTA"][metric] == pytest.approx(value, abs=1e-6, nan_ok=True), (
                task,
                metric,
            )
    per_slice = tmp_path / "out" / "inference_TTA" / NAME / "lesion_per_slice.json"
    assert len(json.loads(per_slice.read_text())["slices"]) == len(DatasetCatalog.get(NAME))


def test_flip_and_scales_change_the_predictions(synthetic_lesions, tmp_path):
    plain, tta = plain_and_tta(str(tmp_path / "out"), "(112, 128, 144)", True)
    assert tta["lesion_TTA"]["dice"] != pytest.approx(plain["lesion"]["dice"], abs=1e-6)
    assert os.path.isdir(tmp_path / "out" / "inference_TTA" / NAME)


def test_training_ends_with_a_tta_evaluation(synthetic_lesions, tmp_path):
    opts = [*TINY_SCHEDULE, "SOLVER.MAX_ITER", "2", "DATASETS.TRAIN", f"('{NAME}',)"]
    opts += ["DATALOADER.CT_DATASET_REPEAT", "(1.0,)"]
    cfg, _ = segmenter(str(tmp_path / "out"), [*opts, "TEST.AUG.ENABLED", "True"])
    trainer = CTLesionTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    results = trainer.eval_results()
    assert {"segm", "lesion", "segm_TTA", "lesion_TTA"} <= set(results)
    assert (tmp_path / "out" / "inference_TTA" / NAME / "lesion_per_slice.json").is_file()


def test_classifier_refuses_tta(tmp_path):
    cfg = get_config(
        "classifier_R18_T1_ucsd_cpu.yaml",
        ["MODEL.DEVICE", "cpu", "OUTPUT_DIR", str(tmp_path), "TEST.AUG.ENABLED", "True"],
    )
    with pytest.raises(ValueError, match="TEST.AUG.ENABLED False"):
        CTLesionTrainer.test_with_TTA(cfg, model=None)


def test_predictor_refuses_tta_instead_of_ignoring_it(tmp_path):
    cfg, model = segmenter(str(tmp_path), ["TEST.AUG.ENABLED", "True"])
    with pytest.raises(ValueError, match="Set TEST.AUG.ENABLED False"):
        CTLesionPredictor(cfg, models=(model, None))
