"""CTLesionEvaluator: pixel Dice and lesion detection rates on tiny cases worked out by hand."""

import json
import math
import os
from functools import partial

import coco_cases  # tests/, on sys.path under pytest
import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Instances

from ct_lesion_d2.evaluation import (
    CTLesionEvaluator,
    build_lesion_evaluators,
    connected_instances,
    encode_masks,
    slice_lesion_counts,
)
from ct_lesion_d2.model_zoo import get_config

H, W = 10, 13
NAME = "ct_lesion_test_lesion_eval"


rect = partial(coco_cases.rect, (H, W))
record = partial(coco_cases.coco_record, size=(H, W), str_counts=True)  # as load_coco_json
prediction = partial(coco_cases.instance_prediction, size=(H, W))


# Slice 1: lesions g1 (rows 0-3, cols 0-3, 16 px) and g2 (rows 6-7, cols 8-9, 4 px).
# p1 (0.9) covers rows 0-3, cols 2-5: 16 px, 8 of them in g1, IoU 8 / 24 = 1/3, detects g1;
# p2 (0.3) is g2 exactly, but below the 0.5 threshold; p3 (0.8) is rows 8-9, cols 0-1, on no
# lesion. At 0.5: |P| = 16 + 4 = 20, |G| = 20, |P & G| = 8, Dice = 16 / 40 = 40 %.
G1, G2 = rect(0, 4, 0, 4), rect(6, 8, 8, 10)
P1, P2, P3 = rect(0, 4, 2, 6), G2.copy(), rect(8, 10, 0, 2)
# Slice 2: lesion g3 (rows 2-5, cols 2-5, 16 px) predicted exactly by p4 (0.6): Dice 100 %.
G3 = rect(2, 6, 2, 6)
P4 = G3.copy()


@pytest.fixture
def dataset():
    def register(records):
        DatasetCatalog.register(NAME, lambda: records)
        MetadataCatalog.get(NAME).set(thing_classes=["Lesion"])
        return NAME

    yield register
    DatasetCatalog.pop(NAME)
    MetadataCatalog.pop(NAME)


def run(name, predictions, **kwargs):
    evaluator = CTLesionEvaluator(name, **kwargs)
    evaluator.reset()
    for image_id, pred in predictions.items():
        evaluator.process([{"image_id": image_id}], [pred])
    return evaluator.evaluate()["lesion"]


def test_two_slices_by_hand(dataset, tmp_path):
    name = dataset([record(1, [G1, G2]), record(2, [G3])])
    res = run(
        name,
        {1: prediction([P1, P2, P3], [0.9, 0.3, 0.8]), 2: prediction([P4], [0.6])},
        output_dir=str(tmp_path),
    )
    # pooled: 2 * (8 + 16) / ((20 + 16) + (20 + 16)) = 48 / 72; per slice: (40 + 100) / 2
    assert res["dice"] == pytest.approx(100 * 48 / 72)
    assert res["dice_per_slice"] == pytest.approx(70.0)
    assert res["pixel_precision"] == pytest.approx(100 * 24 / 36)
    assert res["pixel_recall"] == pytest.approx(100 * 24 / 36)
    # lesions g1, g3 of g1, g2, g3 detected; p1, p4 of p1, p3, p4 on a lesion
    assert res["lesion_sensitivity"] == pytest.approx(100 * 2 / 3)
    assert res["lesion_precision"] == pytest.approx(100 * 2 / 3)
    assert (res["num_slices"], res["num_empty_slices"]) == (2, 0)
    assert (res["num_gt_lesions"], res["num_pred_lesions"]) == (3, 3)
    with open(os.path.join(tmp_path, "lesion_per_slice.json")) as f:
        written = json.load(f)
    assert written["score_thresh"] == 0.5 and written["dataset"] == name
    assert [s["dice"] for s in written["slices"]] == pytest.approx([40.0, 100.0])
    assert written["slices"][0]["file_name"] == "slice_1.png"
    assert written["metrics"]["dice"] == pytest.approx(res["dice"])


def test_dice_against_score_by_hand(dataset, tmp_path):
    name = dataset([record(1, [G1, G2]), record(2, [G3])])
    preds = {1: prediction([P1, P2, P3], [0.9, 0.3, 0.8]), 2: prediction([P4], [0.6])}
    res = run(name, preds, output_dir=str(tmp_path), curve_thresholds=(0.7, 0.2, 0.5, 0.95))
    with open(os.path.join(tmp_path, "lesion_per_slice.json")) as f:
        curve = json.load(f)["score_curve"]
    assert [p["score_thresh"] for p in curve] == [0.2, 0.5, 0.7, 0.95]
    # |G| = 20 + 16 = 36 in both slices together. At 0.2 p2 (g2 exactly) counts too:
    # |P| = 24 + 16, |P & G| = 12 + 16; at 0.7 p4 (0.6) drops out: |P| = 20, |P & G| = 8;
    # at 0.95 nothing is predicted: Dice and recall 0, precision 0 / 0.
    expected = [
        (100 * 56 / 76, 100 * 28 / 40, 100 * 28 / 36),
        (100 * 48 / 72, 100 * 24 / 36, 100 * 24 / 36),
        (100 * 16 / 56, 100 * 8 / 20, 100 * 8 / 36),
    ]
    for point, (dice, precision, recall) in zip(curve, expected):
        assert (point["dice"], point["pixel_precision"], point["pixel_recall"]) == pytest.approx(
            (dice, precision, recall)
        )
    assert curve[3]["dice"] == 0 and curve[3]["pixel_recall"] == 0
    assert curve[3]["pixel_precision"] is None
    # the point at the evaluator's own threshold is its headline Dice; the curve has a picture
    assert curve[1]["dice"] == pytest.approx(res["dice"])
    assert os.path.getsize(os.path.join(tmp_path, "lesion_dice_vs_score.png")) > 1000


def test_empty_prediction_empty_gt_and_neither(dataset):
    # 3: lesion of 9 px, no prediction (Dice 0); 4: no lesion, a 5 px prediction (Dice 0);
    # 5: no lesion and only a prediction under the threshold: no Dice, left out of the mean.
    name = dataset([record(2, [G3]), record(3, [rect(0, 3, 0, 3)]), record(4, []), record(5, [])])
    res = run(
        name,
        {
            2: prediction([P4], [0.6]),
            3: prediction([], []),
            4: prediction([rect(9, 10, 0, 5)], [0.7]),
            5: prediction([P3], [0.2]),
        },
    )
    assert res["dice"] == pytest.approx(100 * 32 / (16 + 5 + 16 + 9))
    assert res["dice_per_slice"] == pytest.approx(100 / 3)
    assert res["pixel_precision"] == pytest.approx(100 * 16 / 21)
    assert res["pixel_recall"] == pytest.approx(100 * 16 / 25)
    assert res["num_empty_slices"] == 1
    assert res["lesion_sensitivity"] == pytest.approx(50.0)
    assert res["lesion_precision"] == pytest.approx(50.0)


def test_only_empty_slices_give_nan_not_an_error(dataset):
    name = dataset([record(1, [])])
    res = run(name, {1: prediction([], [])})
    for key in (
        "dice",
        "dice_per_slice",
        "pixel_precision",
        "pixel_recall",
        "lesion_sensitivity",
        "lesion_precision",
    ):
        assert math.isnan(res[key])
    assert res["num_empty_slices"] == 1


def test_score_threshold(dataset):
    name = dataset([record(1, [G1, G2])])
    pred = {1: prediction([P1, P2, P3], [0.9, 0.3, 0.8])}
    at_half = run(name, pred)
    assert at_half["dice"] == pytest.approx(40.0)
    # at 0.25, p2 (= g2) joins: |P| = 24, |P & G| = 12, Dice 24 / 44; g2 is now detected
    low = run(name, pred, score_thresh=0.25)
    assert low["dice"] == pytest.approx(100 * 24 / 44)
    assert low["lesion_sensitivity"] == pytest.approx(100.0)
    assert low["lesion_precision"] == pytest.approx(100 * 2 / 3)
    # a score equal to the threshold counts; above every score nothing is predicted
    assert run(name, pred, score_thresh=0.9)["num_pred_lesions"] == 1
    none = run(name, pred, score_thresh=0.95)
    assert none["dice"] == pytest.approx(0.0) and none["lesion_sensitivity"] == 0.0
    assert math.isnan(none["lesion_precision"])


def test_lesion_matching_rule():
    def counts(preds, gts, thresh=0.1):
        return slice_lesion_counts(
            encode_masks(np.stack(preds)), encode_masks(np.stack(gts)), H, W, thresh
        )

    lesion = rect(0, 10, 0, 10)  # 100 px
    # two halves: each has IoU 0.5, both are true positives and the lesion is found once
    halves = counts([rect(0, 5, 0, 10), rect(5, 10, 0, 10)], [lesion])
    assert (halves["num_gt_detected"], halves["num_pred_matched"]) == (1, 2)
    # 9 px inside it: IoU 0.09 < 0.1, a miss and a false positive; 10 px: IoU 0.1, a hit
    assert counts([rect(0, 3, 0, 3)], [lesion])["num_gt_detected"] == 0
    assert counts([rect(0, 1, 0, 10)], [lesion])["num_gt_detected"] == 1
    # one prediction over two lesions of 8 px each (16 of its 20 px): IoU 0.4 with each
    merged = counts([rect(0, 2, 0, 10)], [rect(0, 2, 0, 4), rect(0, 2, 6, 10)])
    assert (merged["num_gt_detected"], merged["num_pred_matched"]) == (2, 1)
    assert counts([rect(0, 2, 0, 10)], [rect(0, 2, 0, 4)], thresh=0.5)["num_gt_detected"] == 0


def test_polygon_annotations_and_size_check(dataset):
    name = dataset([record(1, [G3], polygons=True)])
    assert run(name, {1: prediction([P4], [0.6])})["dice"] == pytest.approx(100.0)
    evaluator = CTLesionEvaluator(name)
    bad = Instances((H + 1, W))
    bad.pred_masks, bad.scores = torch.zeros(1, H + 1, W, dtype=torch.bool), torch.ones(1)
    with pytest.raises(ValueError, match="pred_masks of size"):
        evaluator.process([{"image_id": 1}], [{"instances": bad}])


def test_connected_instances_are_8_connected():
    mask = rect(0, 2, 0, 2) | rect(2, 4, 2, 4) | rect(7, 9, 9, 12)  # two touch at a corner
    instances = connected_instances(mask)
    assert instances.shape == (2, H, W)
    assert sorted(instances.sum(axis=(1, 2)).tolist()) == [6, 8]
    assert connected_instances(np.zeros((H, W))).shape == (0, H, W)


def test_build_lesion_evaluators_beside_coco(dataset, tmp_path):
    name = dataset([record(1, [G1, G2]), record(2, [G3])])
    cfg = get_config("mask_rcnn_R18_T1", ["TEST.CT_LESION_EVAL.SCORE_THRESH", "0.25"])
    evaluator = build_lesion_evaluators(cfg, name, str(tmp_path))
    evaluator.reset()
    evaluator.process(
        [{"image_id": 1, "height": H, "width": W}], [prediction([P1, P2, P3], [0.9, 0.3, 0.8])]
    )
    evaluator.process([{"image_id": 2, "height": H, "width": W}], [prediction([P4], [0.6])])
    res = evaluator.evaluate()
    assert set(res) == {"bbox", "segm", "lesion"}
    assert res["lesion"]["dice"] == pytest.approx(100 * 2 * 28 / (24 + 16 + 20 + 16))
    assert os.path.isfile(os.path.join(tmp_path, "lesion_per_slice.json"))
