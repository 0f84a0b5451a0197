"""An ensemble of classifiers from their saved predictions
(tools/ensemble_classifier_predictions.py): the mean probabilities worked out by hand, the
evaluator's files for the ensemble, refusals."""

import json

import numpy as np
import pytest
from test_operating_point import CLASSES, evaluate  # tests/, on sys.path under pytest

from ct_lesion_d2.evaluation import (
    average_predictions,
    evaluate_ensemble,
    validation_operating_point,
)
from ct_lesion_d2.evaluation.ensemble import main as ensemble_main

TRUE = [0, 0, 1, 1]
# run A calls slice 1 COVID and misses slice 2; run B ranks slices 1 and 2 the other way round
RUN_A = [0.2, 0.6, 0.4, 0.9]
RUN_B = [0.4, 0.2, 0.8, 0.7]
MEAN = [0.3, 0.4, 0.6, 0.8]  # every slice right at the argmax


@pytest.fixture
def two_runs(tmp_path):
    folders = []
    for name, scores in (("a", RUN_A), ("b", RUN_B)):
        evaluate(tmp_path / name, scores, TRUE)
        folders.append(str(tmp_path / name))
    return folders


def test_mean_probabilities_by_hand(two_runs, tmp_path):
    assert evaluate(tmp_path / "again_a", RUN_A, TRUE)["accuracy"] == pytest.approx(50.0)
    averaged, summary = average_predictions(two_runs)
    assert summary["class_names"] == CLASSES
    assert [p["class_id"] for p in averaged] == TRUE
    assert np.allclose([p["class_probs"][1] for p in averaged], MEAN)
    metrics = evaluate_ensemble(two_runs, str(tmp_path / "ens"))["classification"]
    assert metrics["accuracy"] == pytest.approx(100.0)
    assert metrics["auc/COVID"] == pytest.approx(100.0)
    saved = json.loads((tmp_path / "ens" / "classification_predictions.json").read_text())
    assert [p["pred_class"] for p in saved] == TRUE
    # the ensemble's folder is read like any run's, e.g. to choose a threshold
    result = validation_operating_point(str(tmp_path / "ens"), [])
    assert 0.4 < result["threshold"] <= 0.6


def test_predictions_of_other_splits_or_one_run_are_refused(two_runs, tmp_path):
    evaluate(tmp_path / "other", [0.5, 0.5, 0.5, 0.5], [1, 0, 1, 1])
    with pytest.raises(ValueError, match="images or true classes differ"):
        average_predictions([two_runs[0], str(tmp_path / "other")])
    with pytest.raises(ValueError, match="two models or more"):
        average_predictions(two_runs[:1])
    with pytest.raises(FileNotFoundError, match="evaluate the classifier"):
        average_predictions([two_runs[0], str(tmp_path / "missing")])


def test_tool_refuses_to_overwrite_an_ensemble(two_runs, tmp_path, capsys):
    out = str(tmp_path / "ens")
    ensemble_main(["--runs", *two_runs, "--output", out])
    assert "accuracy 100.0" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="--overwrite"):
        ensemble_main(["--runs", *two_runs, "--output", out])
    ensemble_main(["--runs", *two_runs, "--output", out, "--overwrite"])
