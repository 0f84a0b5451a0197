"""Lesion counting on hand-made masks: connected regions of the union, joined across slices."""

import json

import numpy as np
import pytest
import torch
from detectron2.structures import Boxes, Instances

from ct_lesion_d2.analysis import build_scan_report, find_lesions, slice_spacing_mm
from ct_lesion_d2.data.readers import Scan
from ct_lesion_d2.engine import SlicePrediction

SIZE = (10, 12)


def instances(masks, scores):
    inst = Instances(SIZE)
    inst.pred_masks = torch.as_tensor(np.array(masks, dtype=bool).reshape(-1, *SIZE))
    inst.scores = torch.tensor(scores, dtype=torch.float32)
    inst.pred_classes = torch.zeros(len(scores), dtype=torch.int64)
    inst.pred_boxes = Boxes(torch.zeros(len(scores), 4))
    inst.pred_mask_logits = torch.zeros(len(scores), 28, 28)
    return inst


def box(r0, r1, c0, c1):
    mask = np.zeros(SIZE, bool)
    mask[r0:r1, c0:c1] = True
    return mask


def test_overlapping_masks_of_one_lesion_count_once():
    # two overlapping instances (rows 1-4 and 2-5 of columns 1-4) and a separate one
    table = find_lesions(
        [instances([box(1, 4, 1, 4), box(2, 5, 2, 5), box(7, 9, 8, 11)], [0.9, 0.6, 0.8])],
        spacing_mm=(0.5, 0.8),
    )
    assert len(table.lesions) == 2 and not table.joined_3d
    first, second = table.lesions
    # union: 9 + 9 - 4 = 14 pixels of 0.4 mm^2
    assert first["id"] == 1 and first["area_px"] == 14 and first["area_mm2"] == pytest.approx(5.6)
    assert first["num_instances"] == 2 and first["max_score"] == pytest.approx(0.9)
    assert first["mean_score"] == pytest.approx(0.75)
    assert second["area_px"] == 6 and second["num_instances"] == 1
    assert first["volume_ml"] is None  # one slice: no volume
    assert table.labels.shape == (1, *SIZE) and set(np.unique(table.labels)) == {0, 1, 2}


def test_diagonal_pixels_are_one_region_and_threshold_drops_instances():
    a, b = box(0, 2, 0, 2), box(2, 4, 2, 4)  # touch at a corner: 8-connected
    (lesion,) = find_lesions([instances([a, b], [0.9, 0.8])]).lesions
    assert lesion["area_px"] == 8
    table = find_lesions([instances([a, b], [0.9, 0.4])], score_threshold=0.5)
    assert [x["area_px"] for x in table.lesions] == [4]


def test_one_lesion_over_two_slices_is_one_3d_lesion_with_its_volume():
    slices = [
        instances([box(2, 5, 2, 6)], [0.7]),  # 12 px
        instances([box(3, 6, 4, 8), box(3, 5, 4, 6)], [0.9, 0.5]),  # 12 px, overlaps slice 0
        instances([], []),
        instances([box(0, 2, 0, 2)], [0.6]),  # 4 px, slice 3
    ]
    table = find_lesions(slices, spacing_mm=(0.5, 0.8), positions_mm=[10.0, 12.5, 15.0, 17.5])
    assert table.joined_3d and table.slice_spacing_mm == pytest.approx(2.5)
    joined, alone = table.lesions
    assert joined["slices"] == [0, 1] and joined["area_px"] == 24
    # 24 px x 0.4 mm^2 x 2.5 mm = 24 mm^3 = 0.024 mL
    assert joined["volume_ml"] == pytest.approx(0.024)
    assert joined["max_slice_area_mm2"] == pytest.approx(4.8)
    assert joined["num_instances"] == 3 and joined["mean_score"] == pytest.approx(0.7)
    assert alone["slices"] == [3] and alone["volume_ml"] == pytest.approx(4 * 0.4 * 2.5 / 1000)
    assert table.slice_lesion_ids(1) == [1] and table.slice_lesion_ids(2) == []
    # the same slices without positions (a PNG folder): three lesions, no volume
    flat = find_lesions(slices, spacing_mm=(0.5, 0.8))
    assert len(flat.lesions) == 3 and flat.lesions[0]["volume_ml"] is None
    assert "not joined in 3D" in flat.note


def test_slice_spacing_needs_even_gaps():
    assert slice_spacing_mm([0.0, 2.0, 4.0]) == pytest.approx(2.0)
    assert slice_spacing_mm([4.0, 2.0, 0.0]) == pytest.approx(2.0)
    assert slice_spacing_mm([0.0, 2.0, 6.0]) is None
    assert slice_spacing_mm([0.0]) is None and slice_spacing_mm(None) is None


def test_scan_report_counts_regions_not_instances():
    slices = [
        instances([box(2, 5, 2, 6), box(2, 5, 3, 6)], [0.7, 0.6]),
        instances([box(3, 6, 4, 8)], [0.9]),
    ]
    scan = Scan(np.zeros((2, *SIZE)), True, (0.5, 0.8), 2.0, ["a", "b"], "scan", None, [0.0, 2.0])
    predictions = [
        SlicePrediction(inst, torch.zeros(2, 4), torch.zeros(2), 1, "segmenter") for inst in slices
    ]
    report = build_scan_report(
        scan, predictions, thing_classes=["Lesion"], settings={"confidence_threshold": 0.5}
    )
    summary = report["summary"]
    assert summary["lesion_count"] == 1 and summary["detection_count"] == 3
    assert summary["lesions_joined_3d"] and summary["lesion_volume_ml"] == pytest.approx(
        24 * 0.4 * 2.0 / 1000
    )
    assert [s["lesion_count"] for s in report["slices"]] == [1, 1]
    assert [s["lesion_ids"] for s in report["slices"]] == [[1], [1]]
    assert report["lesions"][0]["slices"] == [0, 1]
    assert report["schema"] == "ct_lesion_d2.scan_report/2"
    json.dumps(report)
