"""Scan-level report: per-slice lesions and class scores, summed and aggregated per scan.

The JSON written by ``tools/predict.py`` is the dict of :func:`build_scan_report`; its schema is
documented in docs/PREDICT.md and carried in the ``schema`` field.
"""

import numpy as np
from pycocotools import mask as mask_util

from ..data.readers.geometry import non_axial_input
from .lesions import find_lesions

__all__ = ["AGGREGATION_RULES", "SCHEMA", "aggregate_classes", "build_scan_report"]

SCHEMA = "ct_lesion_d2.scan_report/2"

AGGREGATION_RULES = {
    "mean": "scan class probabilities are the mean of the slice class probabilities over all "
    "slices; the scan class is their argmax",
    "majority": "the scan class is the class predicted (argmax) for the most slices, ties going "
    "to the higher mean probability; the probabilities given are the slice means",
}


def _round(value, digits=6):
    return None if value is None else round(float(value), digits)


def aggregate_classes(slice_probs, class_names, rule="mean"):
    """Scan-level class from per-slice class probabilities.

    Args:
        slice_probs (np.ndarray): (S, K) probabilities (sigmoid scores) per slice.
        class_names (list[str]): K names.
        rule (str): a key of ``AGGREGATION_RULES``.

    Returns:
        dict: ``class`` (name), ``class_id``, ``probabilities`` (name -> mean probability),
        ``slice_votes`` (name -> slices predicting it), ``rule`` and ``description``.
    """
    if rule not in AGGREGATION_RULES:
        raise ValueError(f"unknown aggregation rule {rule!r}; use one of {list(AGGREGATION_RULES)}")
    slice_probs = np.asarray(slice_probs, dtype=np.float64)
    mean = slice_probs.mean(axis=0)
    votes = np.bincount(slice_probs.argmax(axis=1), minlength=len(class_names))
    if rule == "mean":
        chosen = int(mean.argmax())
    else:
        tied = np.flatnonzero(votes == votes.max())
        chosen = int(tied[mean[tied].argmax()])
    return {
        "rule": rule,
        "description": AGGREGATION_RULES[rule],
        "class": class_names[chosen],
        "class_id": chosen,
        "probabilities": {n: _round(p) for n, p in zip(class_names, mean)},
        "slice_votes": {n: int(v) for n, v in zip(class_names, votes)},
    }


def _encode(mask):
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _slice_entry(index, name, prediction, pixel_area, class_names, thing_classes, lesion_ids):
    inst = prediction.instances
    masks = inst.pred_masks.numpy().astype(bool)
    union = masks.any(axis=0) if len(masks) else None
    area_px = int(union.sum()) if union is not None else 0
    detections = []
    for i in range(len(inst)):
        class_id = int(inst.pred_classes[i])
        lesion_px = int(masks[i].sum())
        detections.append(
            {
                "score": _round(inst.scores[i]),
                "class_id": class_id,
                "class_name": thing_classes[class_id] if class_id < len(thing_classes) else None,
                "box_xyxy": [_round(v, 2) for v in inst.pred_boxes.tensor[i].tolist()],
                "area_px": lesion_px,
                "area_mm2": _round(lesion_px * pixel_area, 3) if pixel_area else None,
                "mask_rle": _encode(masks[i]),
            }
        )
    boxes = prediction.roi_boxes.numpy()
    box_areas = (boxes[:, 2] - boxes[:, 0]).clip(min=0) * (boxes[:, 3] - boxes[:, 1]).clip(min=0)
    entry = {
        "index": index,
        "name": name,
        "lesion_count": len(lesion_ids),
        "lesion_ids": lesion_ids,
        "lesion_area_px": area_px,
        "lesion_area_mm2": _round(area_px * pixel_area, 3) if pixel_area else None,
        "detection_count": len(inst),
        "detections": detections,
        "class_probabilities": None,
        "predicted_class": None,
        "roi_batch": {
            "source": prediction.roi_source,
            "num_detections": prediction.roi_num_detections,
            "scores": [_round(s, 5) for s in prediction.roi_scores.tolist()],
            "box_areas_px": [_round(a, 1) for a in box_areas.tolist()],
        },
        "panel": None,
        "roi_figure": None,
    }
    if prediction.class_probs is not None:
        probs = prediction.class_probs.tolist()
        entry["class_probabilities"] = {n: _round(p) for n, p in zip(class_names, probs)}
        entry["predicted_class"] = class_names[int(np.argmax(probs))]
    return entry


def build_scan_report(
    scan,
    predictions,
    *,
    thing_classes,
    class_names=None,
    rule="mean",
    settings=None,
    lesions=None,
):
    """The JSON-ready report of one scan.

    Lesions are connected regions of the union of the masks (joined across neighbouring slices
    of a volume, see :mod:`ct_lesion_d2.analysis.lesions`), never instances, which are listed
    per slice as ``detections``. The lesion area of a slice is the area of that union; the
    scan's area is the sum over slices. Areas in mm^2 and volumes in mL need the spacing (None
    where the input has none).

    Args:
        scan (Scan): the scan that was predicted.
        predictions (list[SlicePrediction]): one per slice.
        thing_classes (list[str]): lesion class names of the segmenter.
        class_names (list[str] or None): classifier classes; None when no classifier ran.
        rule (str): scan-level aggregation rule (``AGGREGATION_RULES``).
        settings (dict or None): stored as ``settings`` (models, thresholds, device ...); its
            ``confidence_threshold`` is the score threshold of the lesion union.
        lesions (LesionTable or None): from :func:`find_lesions`; computed when None.

    Returns:
        dict: see docs/PREDICT.md.
    """
    if len(predictions) != scan.num_slices:
        raise ValueError(f"{len(predictions)} predictions for {scan.num_slices} slices")
    pixel_area = scan.pixel_area_mm2
    if lesions is None:
        lesions = find_lesions(
            [p.instances for p in predictions],
            score_threshold=(settings or {}).get("confidence_threshold", 0.0),
            spacing_mm=scan.spacing_mm,
            positions_mm=scan.positions_mm,
        )
    slices = [
        _slice_entry(
            i, name, p, pixel_area, class_names, thing_classes, lesions.slice_lesion_ids(i)
        )
        for i, (name, p) in enumerate(zip(scan.slice_names, predictions))
    ]
    if scan.positions_mm is not None:
        for entry, position in zip(slices, scan.positions_mm):
            entry["position_mm"] = _round(position, 3)
    with_lesions = sum(1 for s in slices if s["lesion_count"] > 0)
    area_px = sum(s["lesion_area_px"] for s in slices)
    summary = {
        "num_slices": scan.num_slices,
        "lesion_count": len(lesions.lesions),
        "lesion_count_note": lesions.note,
        "lesions_joined_3d": lesions.joined_3d,
        "slice_spacing_mm": _round(lesions.slice_spacing_mm, 4),
        "lesion_volume_ml": (
            _round(sum(x["volume_ml"] for x in lesions.lesions), 6)
            if lesions.joined_3d and pixel_area
            else None
        ),
        "detection_count": sum(s["detection_count"] for s in slices),
        "lesion_area_px": area_px,
        "lesion_area_mm2": _round(area_px * pixel_area, 3) if pixel_area else None,
        "slices_with_lesions": with_lesions,
        "fraction_slices_with_lesions": _round(with_lesions / max(1, scan.num_slices)),
        "scan_class": None,
    }
    if class_names is not None:
        probs = np.stack([p.class_probs.numpy() for p in predictions])
        summary["scan_class"] = aggregate_classes(probs, class_names, rule)
    else:
        summary["scan_class_note"] = (
            "no classifier given (--classifier-model, or --classifier-config/"
            "--classifier-weights): class "
            "probabilities and the scan class are absent; only lesion segmentation was run"
        )
    return {
        "schema": SCHEMA,
        "scan": {
            "source": scan.source,
            "series_uid": scan.series_uid,
            "modality": scan.modality,
            "num_slices": scan.num_slices,
            "height": scan.image_size[0],
            "width": scan.image_size[1],
            "input_units": "HU" if scan.is_hu else "uint8_windowed",
            "spacing_mm": list(scan.spacing_mm) if scan.spacing_mm else None,
            "slice_thickness_mm": scan.slice_thickness_mm,
            "orientation": scan.orientation,
            "stored_orientation": scan.stored_orientation,
            "resampled_from": scan.resampled_from,
            "not_axial": non_axial_input(scan),
            "input_notes": list(scan.notes),
        },
        "settings": settings or {},
        "lesion_classes": list(thing_classes),
        "image_classes": list(class_names) if class_names else None,
        "summary": summary,
        "lesions": lesions.lesions,
        "slices": slices,
    }
