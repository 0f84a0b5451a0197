"""Tiny COCO-style slices and predictions for the evaluator tests: a record's annotations and a
model's ``instances`` from binary masks (tests/, on sys.path under pytest)."""

import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.structures import Boxes, BoxMode, Instances


def rect(size, y0, y1, x0, x1):
    """(H, W) uint8 mask of rows y0..y1-1 and columns x0..x1-1."""
    mask = np.zeros(size, dtype=np.uint8)
    mask[y0:y1, x0:x1] = 1
    return mask


def square(size, y0, x0, side):
    """(H, W) uint8 mask of a side x side square at row y0, column x0."""
    return rect(size, y0, y0 + side, x0, x0 + side)


def coco_record(image_id, masks, size, polygons=False, str_counts=False):
    """A dataset dict with one annotation per mask: an RLE (``str_counts``: its counts as text,
    as ``load_coco_json`` gives them) or, with ``polygons``, the box of the mask as a polygon."""
    anns = []
    for m in masks:
        rle = mask_util.encode(np.asfortranarray(m))
        x, y, w, h = mask_util.toBbox(rle).tolist()
        if str_counts:
            rle["counts"] = rle["counts"].decode("ascii")
        segm = [[x, y, x + w, y, x + w, y + h, x, y + h]] if polygons else rle
        anns.append(
            {
                "bbox": [x, y, w, h],
                "bbox_mode": BoxMode.XYWH_ABS,
                "segmentation": segm,
                "category_id": 0,
                "iscrowd": 0,
            }
        )
    return {
        "file_name": f"slice_{image_id}.png",
        "image_id": image_id,
        "height": size[0],
        "width": size[1],
        "annotations": anns,
    }


def instance_prediction(masks, scores, size):
    """A model output ``{"instances": ...}`` with these masks, their boxes and scores."""
    inst = Instances(size)
    inst.pred_masks = torch.as_tensor(np.stack(masks) if masks else np.zeros((0, *size))).bool()
    inst.scores = torch.tensor(scores, dtype=torch.float32)
    inst.pred_classes = torch.zeros(len(masks), dtype=torch.int64)
    boxes = [mask_util.toBbox(mask_util.encode(np.asfortranarray(m))) for m in masks]
    xyxy = [[x, y, x + w, y + h] for x, y, w, h in boxes]
    inst.pred_boxes = Boxes(torch.tensor(xyxy, dtype=torch.float32).reshape(-1, 4))
    return {"instances": inst}
