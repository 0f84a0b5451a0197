"""CTClassificationEvaluator on a tiny prediction set whose metrics are worked out by hand."""

import contextlib
import itertools
import json
import logging
import math

import numpy as np
import pytest
import torch
from detectron2.data import MetadataCatalog
from detectron2.evaluation.testing import flatten_results_dict, print_csv_format
from PIL import Image

from ct_lesion_d2.evaluation import CTClassificationEvaluator, binary_auc, classification_metrics

CLASSES = ["Normal", "Pneumonia", "COVID-19"]

# image:      0    1    2    3    4    5    6    7
TRUE = [0, 0, 0, 1, 1, 2, 2, 2]
PRED = [0, 0, 1, 1, 2, 2, 2, 0]
PROBS = [
    [0.9, 0.2, 0.1],
    [0.6, 0.3, 0.2],
    [0.4, 0.7, 0.2],
    [0.1, 0.6, 0.3],
    [0.2, 0.3, 0.5],
    [0.1, 0.2, 0.8],
    [0.3, 0.3, 0.5],
    [0.6, 0.1, 0.4],
]
# Confusion matrix (rows true, columns predicted):
#   Normal    [2, 1, 0]
#   Pneumonia [0, 1, 1]
#   COVID-19  [1, 0, 2]
# accuracy = (2 + 1 + 2) / 8 = 62.5 %
# sensitivity: Normal 2/3, Pneumonia 1/2, COVID-19 2/3
# specificity = TN / negatives: Normal (5 - 1) / 5, Pneumonia (6 - 1) / 6, COVID-19 (5 - 1) / 5
# F1 = 2TP / (2TP + FP + FN): Normal 4/6, Pneumonia 2/4, COVID-19 4/6; macro 11/18
# AUC (one-vs-rest, pairs won + 1/2 per tie over n_pos * n_neg):
#   Normal:    pos .9 .6 .4 vs neg .1 .2 .1 .3 .6 -> 5 + 4.5 + 4 = 13.5 / 15 = 0.9
#   Pneumonia: pos .6 .3 vs neg .2 .3 .7 .2 .3 .1 -> 5 + (3 + 2 * 0.5) = 9 / 12 = 0.75
#   COVID-19:  pos .8 .5 .4 vs neg .1 .2 .2 .3 .5 -> 5 + 4.5 + 4 = 13.5 / 15 = 0.9
#   macro = (0.9 + 0.75 + 0.9) / 3 = 0.85
EXPECTED = {
    "accuracy": 62.5,
    "f1_macro": 100 * 11 / 18,
    "auc_macro": 85.0,
    "sensitivity/Normal": 100 * 2 / 3,
    "sensitivity/Pneumonia": 50.0,
    "sensitivity/COVID-19": 100 * 2 / 3,
    "specificity/Normal": 80.0,
    "specificity/Pneumonia": 100 * 5 / 6,
    "specificity/COVID-19": 80.0,
    "f1/Normal": 100 * 2 / 3,
    "f1/Pneumonia": 50.0,
    "f1/COVID-19": 100 * 2 / 3,
    "auc/Normal": 90.0,
    "auc/Pneumonia": 75.0,
    "auc/COVID-19": 90.0,
}
EXPECTED_CM = [[2, 1, 0], [0, 1, 1], [1, 0, 2]]


@contextlib.contextmanager
def captured(caplog, logger_name, level):
    """Capture ``logger_name`` even if ``setup_logger`` turned its propagation off."""
    logger = logging.getLogger(logger_name)
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(level, logger=logger_name):
            yield
    finally:
        logger.removeHandler(caplog.handler)


def model_io(true, pred, probs):
    """Inputs and CTMaskNetClassifier-like outputs (float32 tensors, 0-dim ``pred_class``)."""
    inputs = [{"image_id": i, "class_id": t} for i, t in enumerate(true)]
    outputs = []
    for p, prob in zip(pred, probs):
        prob = torch.tensor(prob, dtype=torch.float32)
        outputs.append(
            {"class_logits": torch.logit(prob), "class_probs": prob, "pred_class": torch.tensor(p)}
        )
    return inputs, outputs


def run_evaluator(evaluator, true=TRUE, pred=PRED, probs=PROBS, batch_size=3):
    evaluator.reset()
    inputs, outputs = model_io(true, pred, probs)
    for start in range(0, len(inputs), batch_size):
        end = start + batch_size
        evaluator.process(inputs[start:end], outputs[start:end])
    return evaluator.evaluate()


def test_metrics_by_hand():
    evaluator = CTClassificationEvaluator("ct_cls_eval_hand", class_names=CLASSES)
    results = run_evaluator(evaluator)
    assert list(results) == ["classification"]
    metrics = results["classification"]
    assert set(metrics) == set(EXPECTED)
    for key, value in EXPECTED.items():
        assert metrics[key] == pytest.approx(value, abs=1e-9), key
    assert evaluator.confusion_matrix.tolist() == EXPECTED_CM


def test_results_are_flat_floats_for_detectron2_consumers(caplog):
    results = run_evaluator(CTClassificationEvaluator("ct_cls_eval_flat", class_names=CLASSES))
    assert all(type(v) is float for v in results["classification"].values())
    # what EvalHook does with the results, and the copy-paste printer of DefaultTrainer.test
    flat = flatten_results_dict(results)
    assert {k: float(v) for k, v in flat.items()} == pytest.approx(
        {f"classification/{k}": v for k, v in EXPECTED.items()}
    )
    with captured(caplog, "detectron2.evaluation.testing", logging.INFO):
        print_csv_format(results)
    assert "copypaste: accuracy,f1_macro,auc_macro" in caplog.text


def test_auc_ties_match_pairwise_count():
    # positives .5 .5 vs negatives .5 .2: each positive ties one and beats one -> 1.5 / 2
    assert binary_auc([0.5, 0.5, 0.5, 0.2], [1, 1, 0, 0]) == pytest.approx(0.75)
    assert binary_auc([0.3, 0.3, 0.3], [1, 0, 0]) == pytest.approx(0.5)
    rng = np.random.default_rng(0)
    scores, labels = rng.integers(0, 5, 40) / 4.0, rng.integers(0, 2, 40).astype(bool)
    pairs = [
        1.0 if p > n else 0.5 if p == n else 0.0
        for p, n in itertools.product(scores[labels], scores[~labels])
    ]
    assert binary_auc(scores, labels) == pytest.approx(np.mean(pairs))


def test_nan_for_class_without_positives():
    # no Pneumonia image: its AUC and sensitivity are undefined; it is never predicted -> spec 100
    true, pred = [0, 0, 2, 2], [0, 2, 2, 2]
    probs = [[0.8, 0.1, 0.1], [0.4, 0.1, 0.6], [0.3, 0.2, 0.7], [0.2, 0.1, 0.9]]
    metrics, cm = classification_metrics(true, pred, probs, CLASSES)
    assert cm.tolist() == [[1, 0, 1], [0, 0, 0], [0, 0, 2]]
    assert math.isnan(metrics["auc/Pneumonia"])
    assert math.isnan(metrics["sensitivity/Pneumonia"])
    assert math.isnan(metrics["f1/Pneumonia"])
    assert metrics["specificity/Pneumonia"] == 100.0
    # Normal: pos .8 .4 vs neg .3 .2 -> 1.0; COVID-19: pos .7 .9 vs neg .1 .6 -> 1.0
    assert metrics["auc_macro"] == pytest.approx(100.0)
    # F1: Normal 2/3, COVID-19 4/5; Pneumonia left out of the mean
    assert metrics["f1_macro"] == pytest.approx(100 * (2 / 3 + 4 / 5) / 2)
    single, _ = classification_metrics([1, 1], [1, 0], [[0.1, 0.9, 0], [0.6, 0.4, 0]], CLASSES)
    assert math.isnan(single["auc_macro"])
    assert math.isnan(single["specificity/Pneumonia"])


def test_files_written(tmp_path):
    out = tmp_path / "inference"
    evaluator = CTClassificationEvaluator("ct_cls_eval_files", str(out), class_names=CLASSES)
    run_evaluator(evaluator)
    with open(out / "classification_predictions.json") as f:
        per_image = json.load(f)
    assert [p["image_id"] for p in per_image] == list(range(8))
    assert per_image[7]["class_name"] == "COVID-19" and per_image[7]["pred_name"] == "Normal"
    assert per_image[7]["class_probs"] == pytest.approx(PROBS[7])
    with open(out / "classification_metrics.json") as f:
        summary = json.load(f)
    assert summary["confusion_matrix"] == EXPECTED_CM
    assert summary["class_names"] == CLASSES and summary["num_images"] == 8
    assert summary["metrics"] == pytest.approx(EXPECTED)
    with Image.open(out / "confusion_matrix.png") as image:
        assert image.format == "PNG" and min(image.size) > 100
        image.verify()
    assert sorted(p.name for p in out.iterdir()) == [
        "classification_metrics.json",
        "classification_predictions.json",
        "confusion_matrix.png",
    ]


def test_nan_metrics_saved_as_null(tmp_path):
    evaluator = CTClassificationEvaluator("ct_cls_eval_null", str(tmp_path), class_names=CLASSES)
    run_evaluator(evaluator, true=[0, 2], pred=[0, 2], probs=[[0.9, 0, 0.1], [0.2, 0, 0.7]])
    text = (tmp_path / "classification_metrics.json").read_text()
    assert "NaN" not in text
    assert json.loads(text)["metrics"]["auc/Pneumonia"] is None


def test_empty_evaluation_returns_empty_dict(caplog):
    evaluator = CTClassificationEvaluator("ct_cls_eval_empty", class_names=CLASSES)
    evaluator.reset()
    with captured(caplog, "ct_lesion_d2.evaluation", logging.WARNING):
        assert evaluator.evaluate() == {}
    assert "Did not receive valid predictions" in caplog.text


def test_class_names_from_metadata_and_missing():
    name = "ct_cls_eval_meta"
    MetadataCatalog.get(name).class_names = CLASSES
    try:
        results = run_evaluator(CTClassificationEvaluator(name))
        assert "auc/COVID-19" in results["classification"]
    finally:
        MetadataCatalog.remove(name)
    with pytest.raises(ValueError, match="ct_cls_eval_no_names"):
        CTClassificationEvaluator("ct_cls_eval_no_names")
    MetadataCatalog.remove("ct_cls_eval_no_names")


def test_bad_inputs_rejected():
    evaluator = CTClassificationEvaluator("ct_cls_eval_bad", class_names=CLASSES)
    inputs, outputs = model_io([0], [0], [[0.5, 0.2]])
    with pytest.raises(ValueError, match="expected 3"):
        evaluator.process(inputs, outputs)
    inputs, outputs = model_io([0], [0], [PROBS[0]])
    with pytest.raises(KeyError, match="class_id"):
        evaluator.process([{"image_id": 0}], outputs)
    evaluator.process([{"image_id": 0, "class_id": 5}], outputs)
    with pytest.raises(ValueError, match="class ids"):
        evaluator.evaluate()
