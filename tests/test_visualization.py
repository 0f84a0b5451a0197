"""Visualizer panels: prediction beside ground truth, low scores hidden, no silent overwrite."""

import numpy as np
import pytest
import torch
from detectron2.data import MetadataCatalog
from detectron2.structures import Boxes, BoxMode, Instances
from PIL import Image

from ct_lesion_d2.visualization import save_prediction_panels

NAME = "ct_lesion_test_panels"


def fake_predictor(image_bgr):
    h, w = image_bgr.shape[:2]
    inst = Instances((h, w))
    inst.pred_boxes = Boxes(torch.tensor([[10.0, 10.0, 60.0, 50.0], [70.0, 70.0, 90.0, 90.0]]))
    inst.scores = torch.tensor([0.9, 0.1])
    inst.pred_classes = torch.tensor([0, 0])
    masks = torch.zeros(2, h, w, dtype=torch.bool)
    masks[0, 10:50, 10:60] = True
    masks[1, 70:90, 70:90] = True
    inst.pred_masks = masks
    return {"instances": inst}


@pytest.fixture
def record(tmp_path):
    path = tmp_path / "slice.png"
    Image.fromarray(np.full((120, 100), 60, dtype=np.uint8)).save(path)
    MetadataCatalog.get(NAME).set(thing_classes=["Lesion"])
    yield {
        "file_name": str(path),
        "height": 120,
        "width": 100,
        "annotations": [
            {"bbox": [10, 10, 50, 40], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0}
        ],
    }
    MetadataCatalog.pop(NAME)


def test_panel_shows_prediction_and_ground_truth(record, tmp_path):
    out = tmp_path / "panels"
    (path,) = save_prediction_panels(fake_predictor, [record], NAME, str(out))
    panel = np.asarray(Image.open(path).convert("RGB"))
    # a 120 x 100 slice is drawn at scale 512 / 120, twice side by side
    assert panel.shape[0] == 512
    assert panel.shape[1] == 2 * int(100 * 512 / 120)
    left, right = np.split(panel[:, : panel.shape[1] // 2 * 2], 2, axis=1)
    # both halves carry coloured drawings over the grey slice
    for half in (left, right):
        assert (half.max(axis=2).astype(int) - half.min(axis=2) > 40).any()
    # the 0.1-score detection (bottom right) is not drawn at the default threshold 0.5
    low = left[int(75 * 512 / 120) : int(85 * 512 / 120), int(75 * 512 / 120) : int(85 * 512 / 120)]
    assert (low.max(axis=2) - low.min(axis=2) < 10).all()
    with pytest.raises(FileExistsError, match="slice_panel.png"):
        save_prediction_panels(fake_predictor, [record], NAME, str(out))


def test_metadata_is_fresh_and_class_names_are_registered():
    from ct_lesion_d2.data.datasets import image_class_names, lesion_metadata
    from ct_lesion_d2.model_zoo import get_config

    one = lesion_metadata(get_config("mask_rcnn_R18_T1", ["DATASETS.TEST", "()"]))
    two = lesion_metadata(
        get_config("mask_rcnn_R18_T1", ["DATASETS.TEST", "()", "MODEL.ROI_HEADS.NUM_CLASSES", "2"])
    )
    assert one.thing_classes == ["Lesion"] and two.thing_classes == ["GGO", "Consolidation"]
    assert "thing_classes" not in MetadataCatalog.get("ct_lesion_predict").as_dict()
    # the two-class UCSD classifier reports the names its datasets are registered with
    ucsd = get_config("classifier_R18_T1_ucsd_cpu.yaml")
    assert image_class_names(ucsd) == list(MetadataCatalog.get("ct_ucsd_val").thing_classes)
    assert image_class_names(ucsd) == ["non-COVID", "COVID"]
    paper = get_config("classifier_R18_T1", ["DATASETS.TEST", "()"])
    assert image_class_names(paper) == ["Control", "Common Pneumonia", "COVID-19"]
