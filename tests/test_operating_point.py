"""The decision threshold of a two-class classifier: the ROC and Youden's threshold on a case
worked out by hand, the evaluator's threshold and ROC picture, a threshold chosen on one split
and applied to another, and MODEL.CT_CLASSIFIER.DECISION_THRESHOLD in the model."""

import json
import math

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model
from PIL import Image

import ct_lesion_d2  # noqa: F401
from ct_lesion_d2.evaluation import (
    CTClassificationEvaluator,
    metrics_at_threshold,
    roc_curve,
    validation_operating_point,
    youden_threshold,
)
from ct_lesion_d2.evaluation.operating_point import main as choose_threshold_main
from ct_lesion_d2.model_zoo import get_config
from ct_lesion_d2.modeling.meta_arch.covid_ct_mask_net import decide_class

CLASSES = ["NonCOVID", "COVID"]
# the positive class's probability and the truth of 8 slices
SCORES = [0.1, 0.3, 0.35, 0.6, 0.4, 0.7, 0.8, 0.9]
TRUE = [0, 0, 0, 0, 1, 1, 1, 1]
# threshold: .9   .8   .7   .6   .4   .35  .3   .1
# TPR:       1/4  2/4  3/4  3/4  4/4  4/4  4/4  4/4
# FPR:       0    0    0    1/4  1/4  2/4  3/4  4/4
# J:         .25  .5   .75  .5   .75  .5   .25  0   -> .7 (the tie goes to the higher one),
# reported midway to the next lower score .6: 0.65. At 0.65: 3 TP (.7 .8 .9), 1 FN (.4), no FP:
# accuracy 7/8, sensitivity 3/4, specificity 1.
YOUDEN = 0.65


def evaluate(folder, scores, true, pred=None, name="ct_cls_operating_point"):
    """Run a CTClassificationEvaluator on two-class predictions (argmax unless ``pred``)."""
    evaluator = CTClassificationEvaluator(name, str(folder), False, class_names=CLASSES)
    evaluator.reset()
    pred = [int(s >= 0.5) for s in scores] if pred is None else pred
    inputs = [{"image_id": i, "class_id": t} for i, t in enumerate(true)]
    outputs = [
        {"class_probs": torch.tensor([1 - s, s]), "pred_class": torch.tensor(p)}
        for s, p in zip(scores, pred)
    ]
    evaluator.process(inputs, outputs)
    return evaluator.evaluate()["classification"]


def test_roc_and_youden_by_hand():
    thresholds, fpr, tpr = roc_curve(SCORES, np.array(TRUE) == 1)
    assert thresholds[0] == math.inf and list(thresholds[1:4]) == [0.9, 0.8, 0.7]
    assert list(tpr[:6]) == [0, 0.25, 0.5, 0.75, 0.75, 1.0]
    assert list(fpr[:6]) == [0, 0, 0, 0, 0.25, 0.25]
    assert youden_threshold(SCORES, np.array(TRUE) == 1) == pytest.approx(YOUDEN)
    assert math.isnan(youden_threshold([0.2, 0.4], [True, True]))


def test_metrics_at_a_threshold_by_hand():
    predictions = [{"class_id": t, "class_probs": [1 - s, s]} for s, t in zip(SCORES, TRUE)]
    metrics, cm = metrics_at_threshold(predictions, CLASSES, YOUDEN)
    assert cm.tolist() == [[4, 0], [1, 3]]
    assert metrics["accuracy"] == pytest.approx(87.5)
    assert metrics["sensitivity/COVID"] == pytest.approx(75.0)
    assert metrics["specificity/COVID"] == pytest.approx(100.0)
    with pytest.raises(ValueError, match="two classes"):
        metrics_at_threshold(predictions, ["a", "b", "c"], 0.5)


def test_evaluator_reports_youden_and_draws_the_roc(tmp_path):
    metrics = evaluate(tmp_path, SCORES, TRUE)
    assert metrics["youden_threshold"] == pytest.approx(100 * YOUDEN)
    # the stored argmax decisions (>= 0.5): .6 and .7 .8 .9 positive -> 3 TP, 1 FP, 1 FN
    assert metrics["accuracy"] == pytest.approx(75.0)
    with Image.open(tmp_path / "roc_curve.png") as image:
        assert image.format == "PNG" and min(image.size) > 100
        image.verify()
    summary = json.loads((tmp_path / "classification_metrics.json").read_text())
    assert summary["metrics"]["youden_threshold"] == pytest.approx(100 * YOUDEN)


def test_threshold_chosen_on_val_applied_to_test(tmp_path, capsys):
    val, test = tmp_path / "val", tmp_path / "test"
    evaluate(val, SCORES, TRUE)
    # test: at 0.65 the slices .66 and .95 are called COVID, .5 and .62 not
    evaluate(test, [0.5, 0.66, 0.62, 0.95], [0, 0, 1, 1])
    result = validation_operating_point(str(val), [str(test)])
    assert result["threshold"] == pytest.approx(YOUDEN) and result["positive_class"] == "COVID"
    at_test = result["splits"][str(test)]
    assert at_test["at_threshold"]["accuracy"] == pytest.approx(50.0)
    assert at_test["at_threshold"]["specificity/COVID"] == pytest.approx(50.0)
    # the argmax (>= 0.5) calls all four COVID
    assert at_test["argmax"]["accuracy"] == pytest.approx(50.0)
    assert at_test["argmax"]["sensitivity/COVID"] == pytest.approx(100.0)
    assert result["splits"][str(val)]["at_threshold"]["accuracy"] == pytest.approx(87.5)
    out = tmp_path / "choice.json"
    choose_threshold_main(["--val", str(val), "--report", str(test), "--json", str(out)])
    assert "MODEL.CT_CLASSIFIER.DECISION_THRESHOLD 0.6500" in capsys.readouterr().out
    assert json.loads(out.read_text())["threshold"] == pytest.approx(YOUDEN)
    with pytest.raises(FileExistsError, match="--overwrite"):
        choose_threshold_main(["--val", str(val), "--json", str(out)])


def test_missing_predictions_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="classification_predictions.json.*--eval-only"):
        validation_operating_point(str(tmp_path), [])


def test_decide_class():
    probs = torch.tensor([0.7, 0.6])
    assert int(decide_class(probs)) == 0  # argmax
    assert int(decide_class(probs, 0.55)) == 1 and int(decide_class(probs, 0.65)) == 0


CPU = ["MODEL.DEVICE", "cpu", "MODEL.RPN.POST_NMS_TOPK_TEST", "20"]


def test_model_decides_at_its_threshold_and_refuses_bad_ones():
    torch.manual_seed(0)
    image = {"image": torch.rand(3, 96, 96) * 255}
    opts = CPU + ["MODEL.CT_CLASSIFIER.NUM_CLASSES", "2"]
    model = build_model(get_config("classifier_R18_T1", opts)).eval()
    assert model.decision_threshold is None
    with torch.no_grad():
        (argmax,) = model([image])
        assert int(argmax["pred_class"]) == int(argmax["class_logits"].argmax())
        prob = float(argmax["class_probs"][1])
        for threshold, expected in ((prob - 1e-4, 1), (prob + 1e-4, 0)):
            model.decision_threshold = threshold
            (out,) = model([image])
            assert int(out["pred_class"]) == expected
            assert torch.equal(out["class_logits"], argmax["class_logits"])
    built = build_model(
        get_config("classifier_R18_T1", opts + ["MODEL.CT_CLASSIFIER.DECISION_THRESHOLD", "0.3"])
    )
    assert built.decision_threshold == pytest.approx(0.3)
    with pytest.raises(ValueError, match="DECISION_THRESHOLD 0.3 needs two classes"):
        build_model(
            get_config("classifier_R18_T1", CPU + ["MODEL.CT_CLASSIFIER.DECISION_THRESHOLD", "0.3"])
        )
    with pytest.raises(ValueError, match="probability in \\[0, 1\\]"):
        build_model(
            get_config(
                "classifier_R18_T1", opts + ["MODEL.CT_CLASSIFIER.DECISION_THRESHOLD", "1.5"]
            )
        )
