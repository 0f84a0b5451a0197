"""Pixel Dice and lesion-level detection rates of a lesion segmenter, as a Detectron2 evaluator.

Every metric is a percentage (0-100), like Detectron2's COCO numbers, and NaN when its
denominator is zero. Per slice, P is the union of the predicted instance masks whose score is at
least ``score_thresh`` and G the union of the ground-truth instance masks, all classes together
(a lesion is a lesion, whichever of GGO or consolidation it is labelled):

- ``dice``: pooled over slices, ``100 * sum 2|P & G| / sum (|P| + |G|)``.
- ``dice_per_slice``: the mean of the slice Dice over the slices with ground truth or a
  prediction. A slice with neither has no Dice (0 / 0): it is left out of this mean and counted
  in ``num_empty_slices``; a slice with only one of them scores 0.
- ``pixel_precision`` = ``sum |P & G| / sum |P|``, ``pixel_recall`` = ``sum |P & G| / sum |G|``.
- Lesions are the ground-truth instances (the converters write one per 8-connected lesion region
  of the source mask) and the predicted instances above the threshold. A ground-truth lesion is
  detected when some predicted instance has mask IoU >= ``lesion_iou_thresh`` (0.1) with it;
  a predicted instance is a true positive when it has that IoU with some ground-truth lesion.
  ``lesion_sensitivity`` is the fraction of ground-truth lesions detected, ``lesion_precision``
  the fraction of predicted instances that are true positives. The matching is not one to one:
  a lesion split into two predicted halves, or predicted twice, is found once and both
  predictions are true positives, as a reader would count them; duplicates and fragments cost
  in COCO AP, not here. An IoU of 0.1 asks for real overlap (a prediction a tenth the size of
  its lesion, or ten times its size, does not count) while accepting the loose outlines of
  ground-glass opacities.

Beside the metrics at ``score_thresh``, the evaluator pools the pixel Dice, precision and recall
at each score of ``curve_thresholds`` (the same unions, other thresholds): the table in the log,
``score_curve`` in the JSON and the picture ``lesion_dice_vs_score.png``, from which a user
chooses the report threshold on a validation split.
"""

import itertools
import logging
import math
import os
from collections import OrderedDict

import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.data import DatasetCatalog
from detectron2.evaluation import COCOEvaluator, DatasetEvaluator, DatasetEvaluators
from detectron2.utils import comm
from detectron2.utils.logger import create_small_table
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy import ndimage
from tabulate import tabulate

from ..utils import compat
from ..utils.files import atomic_write, write_json_atomic

__all__ = [
    "CTLesionEvaluator",
    "annotation_rles",
    "build_lesion_evaluators",
    "connected_instances",
    "encode_masks",
    "lesion_metrics",
    "plot_score_curve",
    "score_curve",
    "slice_lesion_counts",
    "write_lesion_results",
]

PER_SLICE_FILE = "lesion_per_slice.json"
CURVE_FILE = "lesion_dice_vs_score.png"
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
_COUNTS = (
    "intersection",
    "pred_pixels",
    "gt_pixels",
    "num_gt",
    "num_gt_detected",
    "num_pred",
    "num_pred_matched",
)


def encode_masks(masks):
    """Compressed RLEs of binary masks.

    Args:
        masks (np.ndarray or torch.Tensor): (N, H, W) masks, bool or 0/1.

    Returns:
        list[dict]: N pycocotools RLEs.
    """
    if isinstance(masks, torch.Tensor):
        masks = masks.detach().cpu().numpy()
    masks = np.asarray(masks).astype(np.uint8)
    if masks.ndim != 3:
        raise ValueError(f"masks must be (N, H, W); got shape {masks.shape}")
    if len(masks) == 0:
        return []
    return mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0)))


def annotation_rles(annotations, height, width):
    """The masks of COCO-style annotations as compressed RLEs.

    Args:
        annotations (list[dict]): records' ``annotations``, whose ``segmentation`` is a polygon
            list, an uncompressed RLE (``counts`` a list) or a compressed RLE.
        height, width (int): the slice size.

    Returns:
        list[dict]: one RLE per annotation.

    Raises:
        ValueError: an RLE whose size is not the slice size.
    """
    rles = []
    for ann in annotations:
        segm = ann["segmentation"]
        if isinstance(segm, list):
            rle = mask_util.merge(mask_util.frPyObjects(segm, height, width))
        elif isinstance(segm["counts"], list):
            rle = mask_util.frPyObjects(segm, height, width)
        else:
            counts = segm["counts"]
            rle = {
                "size": list(segm["size"]),
                "counts": counts.encode("ascii") if isinstance(counts, str) else counts,
            }
        if list(rle["size"]) != [height, width]:
            raise ValueError(f"annotation mask of size {rle['size']} on a {height}x{width} slice")
        rles.append(rle)
    return rles


def connected_instances(mask):
    """Split a binary mask into its 8-connected components, as instances (semantic models).

    Args:
        mask (np.ndarray): (H, W) binary mask.

    Returns:
        np.ndarray: (N, H, W) uint8 masks, one per component.
    """
    components, count = ndimage.label(np.asarray(mask).astype(bool), _EIGHT_CONNECTED)
    return (components[None] == np.arange(1, count + 1)[:, None, None]).astype(np.uint8)


def _union(rles, height, width):
    if not rles:
        return mask_util.encode(np.zeros((height, width), dtype=np.uint8, order="F"))
    return mask_util.merge(rles) if len(rles) > 1 else rles[0]


def _union_pixels(rles, gt_union, height, width):
    """``[|P & G|, |P|]`` of the union P of ``rles`` and the ground-truth union G."""
    union = _union(rles, height, width)
    inter = mask_util.area(mask_util.merge([union, gt_union], intersect=True))
    return [int(inter), int(mask_util.area(union))]


def slice_lesion_counts(pred_rles, gt_rles, height, width, lesion_iou_thresh=0.1):
    """The pixel and lesion counts of one slice, from which ``lesion_metrics`` pools metrics.

    Args:
        pred_rles (list[dict]): RLEs of the predicted instances (already thresholded on score).
        gt_rles (list[dict]): RLEs of the ground-truth instances.
        height, width (int): the slice size.
        lesion_iou_thresh (float): mask IoU at which a prediction and a lesion match.

    Returns:
        dict: ``intersection``, ``pred_pixels``, ``gt_pixels`` (of the unions), ``dice`` (the
        slice's, percent; None with neither ground truth nor prediction), ``num_gt``,
        ``num_gt_detected``, ``num_pred``, ``num_pred_matched``.
    """
    gt_union = _union(gt_rles, height, width)
    inter, pred_px = _union_pixels(pred_rles, gt_union, height, width)
    gt_px = int(mask_util.area(gt_union))
    if pred_rles and gt_rles:
        iou = np.asarray(mask_util.iou(pred_rles, gt_rles, [0] * len(gt_rles)))
        hits = iou.reshape(len(pred_rles), len(gt_rles)) >= lesion_iou_thresh
    else:
        hits = np.zeros((len(pred_rles), len(gt_rles)), dtype=bool)
    return {
        "intersection": inter,
        "pred_pixels": pred_px,
        "gt_pixels": gt_px,
        "dice": 200.0 * inter / (pred_px + gt_px) if pred_px + gt_px else None,
        "num_gt": len(gt_rles),
        "num_gt_detected": int(hits.any(axis=0).sum()),
        "num_pred": len(pred_rles),
        "num_pred_matched": int(hits.any(axis=1).sum()),
    }


def _percent(num, den):
    return 100.0 * num / den if den else math.nan


def lesion_metrics(slices):
    """Pool the counts of ``slice_lesion_counts`` over slices (definitions: module docstring).

    Args:
        slices (list[dict]): one ``slice_lesion_counts`` result per slice.

    Returns:
        OrderedDict: ``dice``, ``dice_per_slice``, ``pixel_precision``, ``pixel_recall``,
        ``lesion_sensitivity``, ``lesion_precision`` (percent), and the counts ``num_slices``,
        ``num_empty_slices``, ``num_gt_lesions``, ``num_pred_lesions``.
    """
    total = {k: sum(s[k] for s in slices) for k in _COUNTS}
    scored = [s["dice"] for s in slices if s["dice"] is not None]
    return OrderedDict(
        dice=_percent(2 * total["intersection"], total["pred_pixels"] + total["gt_pixels"]),
        dice_per_slice=float(np.mean(scored)) if scored else math.nan,
        pixel_precision=_percent(total["intersection"], total["pred_pixels"]),
        pixel_recall=_percent(total["intersection"], total["gt_pixels"]),
        lesion_sensitivity=_percent(total["num_gt_detected"], total["num_gt"]),
        lesion_precision=_percent(total["num_pred_matched"], total["num_pred"]),
        num_slices=len(slices),
        num_empty_slices=len(slices) - len(scored),
        num_gt_lesions=total["num_gt"],
        num_pred_lesions=total["num_pred"],
    )


def score_curve(slices, thresholds):
    """Pool the pixel metrics of every score threshold of the curve.

    Args:
        slices (list[dict]): per-slice counts, each with ``gt_pixels`` and ``curve``: one
            ``[intersection, pred_pixels]`` pair per threshold.
        thresholds (list[float]): the scores of the curve, in the order of ``curve``.

    Returns:
        list[dict]: per threshold, ``score_thresh``, ``dice``, ``pixel_precision`` and
        ``pixel_recall`` (percent, NaN on a zero denominator).
    """
    gt_pixels = sum(s["gt_pixels"] for s in slices)
    points = []
    for k, thresh in enumerate(thresholds):
        inter = sum(s["curve"][k][0] for s in slices)
        pred = sum(s["curve"][k][1] for s in slices)
        points.append(
            OrderedDict(
                score_thresh=float(thresh),
                dice=_percent(2 * inter, pred + gt_pixels),
                pixel_precision=_percent(inter, pred),
                pixel_recall=_percent(inter, gt_pixels),
            )
        )
    return points


def plot_score_curve(points, path, title=""):
    """Save pixel Dice, precision and recall against the score threshold as a PNG picture.

    Args:
        points (list[dict]): the output of :func:`score_curve`.
        path (str): where to write the PNG (replaced atomically).
        title (str): title of the picture.
    """
    fig = Figure(figsize=(5.5, 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    x = [p["score_thresh"] for p in points]
    for key, label, style in (
        ("dice", "pixel Dice", "o-"),
        ("pixel_precision", "pixel precision", "s--"),
        ("pixel_recall", "pixel recall", "^--"),
    ):
        ax.plot(x, [p[key] for p in points], style, label=label)
    best = max(points, key=lambda p: -1.0 if math.isnan(p["dice"]) else p["dice"])
    if not math.isnan(best["dice"]):
        ax.annotate(
            f"Dice {best['dice']:.1f} at {best['score_thresh']:.2f}",
            (best["score_thresh"], best["dice"]),
            textcoords="offset points",
            xytext=(0, 10),
            ha="center",
        )
    ax.set(xlabel="lesion score threshold", ylabel="percent", ylim=(0, 100), title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png"))


def _nan_to_none(values):
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in values.items()}


def _curve_table(points):
    rows = [[p["score_thresh"], p["dice"], p["pixel_precision"], p["pixel_recall"]] for p in points]
    return tabulate(
        rows,
        headers=["score", "dice", "precision", "recall"],
        floatfmt=(".2f", ".1f", ".1f", ".1f"),
    )


def write_lesion_results(path, metrics, slices, **settings):
    """Write the metrics, the settings that produced them and the per-slice counts as JSON
    (NaN written as null), replacing an earlier file."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_json_atomic(
        {**settings, "metrics": _nan_to_none(metrics), "slices": slices}, path, overwrite=True
    )


class CTLesionEvaluator(DatasetEvaluator):
    """Pixel Dice, pixel precision and recall, and lesion sensitivity and precision of
    ``instances`` outputs against the dataset's annotations (definitions: module docstring).

    ``evaluate()`` returns ``OrderedDict(lesion={metric: value})``, percentages and counts, and
    writes ``lesion_per_slice.json`` into ``output_dir`` when one is given. Only per-slice counts
    are gathered across processes, never masks.
    """

    def __init__(
        self,
        dataset_name,
        *,
        score_thresh=0.5,
        lesion_iou_thresh=0.1,
        curve_thresholds=(),
        output_dir=None,
        distributed=True,
    ):
        """
        Args:
            dataset_name (str): a ``DatasetCatalog`` name whose records carry ``annotations``;
                they are loaded at the first ``process`` call.
            score_thresh (float): predicted instances with a lower score are ignored.
            lesion_iou_thresh (float): mask IoU at which a prediction detects a lesion.
            curve_thresholds (iterable[float]): scores at which the pixel metrics are pooled
                too (the Dice-against-score curve); empty: no curve.
            output_dir (str or None): where the main process writes the per-slice JSON.
            distributed (bool): gather the slices of every process before evaluating.
        """
        self._logger = logging.getLogger(__name__)
        self._dataset_name = dataset_name
        self._score_thresh = float(score_thresh)
        self._lesion_iou_thresh = float(lesion_iou_thresh)
        self._curve_thresholds = sorted(float(t) for t in curve_thresholds)
        # instances below every threshold are never looked at
        self._lowest_score = min([self._score_thresh] + self._curve_thresholds)
        self._output_dir = output_dir
        self._distributed = distributed
        self._records = None
        self.reset()

    def reset(self):
        self._slices = []

    def _record(self, image_id):
        if self._records is None:
            self._records = {r["image_id"]: r for r in DatasetCatalog.get(self._dataset_name)}
        if image_id not in self._records:
            raise KeyError(f"image_id {image_id!r} is not in dataset {self._dataset_name!r}")
        return self._records[image_id]

    def process(self, inputs, outputs):
        """Count, per slice, the pixels and lesions of the thresholded prediction.

        Args:
            inputs (list[dict]): model inputs, each with the ``image_id`` of its record.
            outputs (list[dict]): model outputs with ``instances`` (``scores``,
                ``pred_masks`` at the record's height and width).
        """
        for inp, out in zip(inputs, outputs):
            record = self._record(inp["image_id"])
            height, width = record["height"], record["width"]
            instances = out["instances"].to("cpu")
            if not instances.has("pred_masks"):
                raise KeyError("CTLesionEvaluator needs pred_masks: a model with MODEL.MASK_ON")
            if tuple(instances.pred_masks.shape[1:]) != (height, width):
                raise ValueError(
                    f"pred_masks of size {tuple(instances.pred_masks.shape[1:])} for "
                    f"{record['file_name']}, whose record is {height}x{width}"
                )
            kept = instances[instances.scores >= self._lowest_score]
            # float32 scores: the thresholds compare in float32, so a score equal to one counts
            rles, scores = encode_masks(kept.pred_masks), kept.scores.numpy()
            gt_rles = annotation_rles(record.get("annotations", []), height, width)
            counts = slice_lesion_counts(
                [r for r, sc in zip(rles, scores) if sc >= self._score_thresh],
                gt_rles,
                height,
                width,
                self._lesion_iou_thresh,
            )
            if self._curve_thresholds:
                gt_union = _union(gt_rles, height, width)
                counts["curve"] = [
                    _union_pixels(
                        [r for r, sc in zip(rles, scores) if sc >= t], gt_union, height, width
                    )
                    for t in self._curve_thresholds
                ]
            self._slices.append(
                {"image_id": record["image_id"], "file_name": record["file_name"], **counts}
            )

    def evaluate(self):
        """Pool the counts of every processed slice (gathered on the main process).

        Returns:
            OrderedDict: ``{"lesion": metrics}``; ``{}`` on other processes and when no slice
            was processed.
        """
        slices = self._slices
        if self._distributed:
            comm.synchronize()
            slices = list(itertools.chain(*comm.gather(slices, dst=0)))
            if not comm.is_main_process():
                return {}
        if not slices:
            self._logger.warning("[CTLesionEvaluator] no slice was processed")
            return {}
        metrics = lesion_metrics(slices)
        curve = score_curve(slices, self._curve_thresholds) if self._curve_thresholds else []
        if self._output_dir:
            write_lesion_results(
                os.path.join(self._output_dir, PER_SLICE_FILE),
                metrics,
                slices,
                dataset=self._dataset_name,
                score_thresh=self._score_thresh,
                lesion_iou_thresh=self._lesion_iou_thresh,
                score_curve=[_nan_to_none(p) for p in curve],
            )
            if curve:
                plot_score_curve(
                    curve, os.path.join(self._output_dir, CURVE_FILE), title=self._dataset_name
                )
        if curve:
            self._logger.info(
                "Pixel metrics of %s against the score threshold (percent):\n%s",
                self._dataset_name,
                _curve_table(curve),
            )
        self._logger.info(
            "Lesion metrics of %s (percent; score >= %.2f, lesion IoU >= %.2f):\n%s",
            self._dataset_name,
            self._score_thresh,
            self._lesion_iou_thresh,
            create_small_table(metrics),
        )
        return OrderedDict(lesion=metrics)


def build_lesion_evaluators(cfg, dataset_name, output_folder=None):
    """COCOEvaluator (bbox and segm AP; its fast C++ path where ``detectron2._C`` is compiled,
    see ``utils/compat.py``) beside ``CTLesionEvaluator`` with the thresholds of
    ``TEST.CT_LESION_EVAL``.

    Args:
        cfg (CfgNode): a config with the project keys.
        dataset_name (str): the dataset to evaluate.
        output_folder (str or None): where both evaluators write their files.

    Returns:
        DatasetEvaluators: its results hold ``bbox``, ``segm`` and ``lesion``.
    """
    return DatasetEvaluators(
        [
            COCOEvaluator(
                dataset_name, output_dir=output_folder, use_fast_impl=compat.HAS_COMPILED_OPS
            ),
            CTLesionEvaluator(
                dataset_name,
                score_thresh=cfg.TEST.CT_LESION_EVAL.SCORE_THRESH,
                lesion_iou_thresh=cfg.TEST.CT_LESION_EVAL.LESION_IOU_THRESH,
                curve_thresholds=cfg.TEST.CT_LESION_EVAL.CURVE_THRESHOLDS,
                output_dir=output_folder,
            ),
        ]
    )
