"""The from-scratch torchvision baselines: a few iterations on synthetic slices, then evaluated."""

import json

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from ct_lesion_d2.benchmark.slice_classifier_baseline import (
    SliceClassifierBaseline,
    results_table,
    train_slice_classifier_baseline,
)
from ct_lesion_d2.data.datasets import register_ct_classification
from ct_lesion_d2.data.synthetic import generate_synthetic_slices
from ct_lesion_d2.model_zoo import get_config

NAME = "ct_lesion_test_baseline_synthetic"
CLASSES = ["Control", "Common Pneumonia", "COVID-19"]


@pytest.fixture
def synthetic_dataset(tmp_path):
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


@pytest.mark.parametrize("arch", ["resnet18", "densenet121"])
def test_baseline_trains_and_reports_accuracy_and_auc(arch, synthetic_dataset, tmp_path):
    cfg = get_config(
        "classifier_R18_T1",
        [
            "MODEL.DEVICE",
            "cpu",
            "DATALOADER.NUM_WORKERS",
            "0",
            "INPUT.MIN_SIZE_TRAIN",
            "(64,)",
            "INPUT.MIN_SIZE_TEST",
            "64",
            "INPUT.RANDOM_FLIP",
            "horizontal",
            "INPUT.CT_AUGMENTATION.ROTATION",
            "10.0",
            "INPUT.CT_AUGMENTATION.CONTRAST",
            "0.3",
            "DATASETS.TRAIN",
            f"('{NAME}',)",
            "DATASETS.TEST",
            f"('{NAME}',)",
        ],
    )
    out = tmp_path / "out"
    results = train_slice_classifier_baseline(cfg, arch, 5.0, str(out), batch_size=2, max_iter=2)
    assert results["training"]["iterations"] == 2
    metrics = results["metrics"][NAME]
    assert 0.0 <= metrics["accuracy"] <= 100.0
    assert "auc_macro" in metrics and "auc/COVID-19" in metrics
    with open(out / "baseline_results.json") as f:
        assert json.load(f)["metrics"][NAME]["accuracy"] == metrics["accuracy"]
    assert (out / "inference" / NAME / "classification_metrics.json").is_file()
    assert "accuracy" in results_table(results, [NAME])


def test_baseline_is_built_without_pretrained_weights():
    with pytest.raises(ValueError, match="arch"):
        SliceClassifierBaseline("vgg", 2, [0.0] * 3, [1.0] * 3)
    model = SliceClassifierBaseline("resnet18", 2, [0.0] * 3, [1.0] * 3)
    assert model.net.fc.out_features == 2
