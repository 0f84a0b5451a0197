"""The ranked RoI batch of COVID-CT-Mask-Net: B detections per image, one row of 5 numbers each.

Pure tensor functions, independent of the model, so that the ranking rules can be tested on
synthetic scores and boxes. The order of operations follows the reference implementation:
clip the decoded boxes to the image, remove zero-area boxes, drop scores not above the score
threshold, class-specific NMS, keep the B best in descending score order, and fill a short
batch by replicating the survivors in rank order.
"""

from typing import NamedTuple

import torch
from detectron2.layers import batched_nms
from detectron2.structures import Boxes

ROW_FEATURES = ("deltas", "boxes")


class RoIBatch(NamedTuple):
    """The B ranked detections of one image.

    Attributes:
        rows (Tensor): (B, 5) ``[confidence, 4 features]``, the input of module S (B, 5 + E
            with per-RoI features appended).
        boxes (Tensor): (B, 4) decoded, clipped XYXY boxes (zeros for padding rows).
        scores (Tensor): (B,) confidences, non-increasing (zeros for padding rows).
        num_detections (int): distinct detections before replication or padding.
    """

    rows: torch.Tensor
    boxes: torch.Tensor
    scores: torch.Tensor
    num_detections: int


def replicate_in_rank_order(ranked, size):
    """Stretch a ranked sequence to ``size`` entries, keeping every entry and the rank order.

    Entry ``k`` of ``n`` fills the slots between the rounded boundaries ``k * size / n`` and
    ``(k + 1) * size / n``, so each entry is repeated ``floor(size / n)`` or ``ceil(size / n)``
    times and the extra copies are spread evenly over the ranks (ties going to the better rank):
    ``[3, 1, 2]`` becomes ``[3, 3, 1, 2, 2]`` for ``size`` 5. The reference implementation drew
    the boundaries at random; evenly spaced ones make the batch deterministic.

    Args:
        ranked (Tensor): (n, ...) scores, indices or rows, best first; ``n`` must be positive.
        size (int): the number of entries wanted (B).

    Returns:
        Tensor: (size, ...); the first ``size`` entries unchanged when ``n >= size``.
    """
    n = len(ranked)
    if n == 0:
        raise ValueError("replicate_in_rank_order needs at least one entry")
    if n >= size:
        return ranked[:size]
    # integer form of round(k * size / n), halves rounded up
    bounds = (2 * torch.arange(n + 1) * size + n) // (2 * n)
    counts = (bounds[1:] - bounds[:-1]).to(ranked.device)
    return ranked.repeat_interleave(counts, dim=0)


def rank_candidates(scores, boxes, labels, *, score_thresh, nms_thresh, remove_empty_boxes):
    """Indices of the (RoI, class) candidates that survive, best first.

    Args:
        scores (Tensor): (M,) candidate confidences.
        boxes (Tensor): (M, 4) decoded XYXY boxes, already clipped to the image.
        labels (Tensor): (M,) int64 class of each candidate.
        score_thresh (float): keep scores strictly above it.
        nms_thresh (float): IoU threshold of the NMS (applied within each class).
        remove_empty_boxes (bool): drop zero-area boxes first (non-finite ones always).

    Returns:
        Tensor: (m,) int64 indices into the M candidates, in non-increasing score order.
    """
    finite = torch.isfinite(boxes).all(dim=1) & torch.isfinite(scores)
    keep = torch.nonzero(finite).view(-1)
    if remove_empty_boxes:
        keep = keep[Boxes(boxes[keep]).area() > 0]
    keep = keep[scores[keep] > score_thresh]
    # batched_nms returns its survivors sorted by decreasing score
    return keep[batched_nms(boxes[keep], scores[keep], labels[keep], nms_thresh)]


def build_roi_batch(scores, boxes, deltas, image_size, roi_features=None, **options):
    """The B ranked rows of one image; candidates are all (RoI, foreground class) pairs.

    Survivors of :func:`rank_candidates` beyond B are dropped; fewer than B are replicated in
    rank order (:func:`replicate_in_rank_order`). When none survives (or ``remove_empty_boxes``
    is off) the missing rows are zero rows.

    Args:
        scores (Tensor): (R, K) confidences of the R RoIs for the K foreground classes.
        boxes (Tensor): (R, K, 4) decoded XYXY boxes, in the coordinates of ``image_size``.
        deltas (Tensor): (R, K, 4) raw box-regression outputs.
        image_size (tuple[int, int]): (height, width) of the image the boxes refer to.
        roi_features (Tensor or None): (R, E) per-RoI numbers appended to each row (the box
            head's features, ``MODEL.CT_CLASSIFIER.ROI_HEAD_FEATURES``): rows are then 5 + E.
        **options: keyword-only ``batch_size`` (int), ``score_thresh`` (float), ``nms_thresh``
            (float), ``remove_empty_boxes`` (bool) and ``row_features`` ("deltas" or "boxes").

    Returns:
        RoIBatch: gradients flow to ``scores`` and the row features.
    """
    batch_size, row_features = options["batch_size"], options["row_features"]
    if row_features not in ROW_FEATURES:
        raise ValueError(f"MODEL.CT_CLASSIFIER.ROW_FEATURES must be one of {ROW_FEATURES}")
    height, width = image_size
    num_classes = scores.shape[1]
    limits = boxes.new_tensor([width, height, width, height])
    scores, boxes, deltas, labels = _flatten_candidates(scores, boxes, deltas, limits)
    keep = rank_candidates(
        scores.detach(),
        boxes.detach(),
        labels,
        score_thresh=options["score_thresh"],
        nms_thresh=options["nms_thresh"],
        remove_empty_boxes=options["remove_empty_boxes"],
    )
    keep = keep[:batch_size]
    num_detections = len(keep)
    if options["remove_empty_boxes"] and 0 < num_detections < batch_size:
        keep = replicate_in_rank_order(keep, batch_size)

    features = deltas if row_features == "deltas" else boxes / limits
    rows = torch.cat([scores[:, None], features], dim=1)
    if roi_features is not None:
        # candidate r * K + k is RoI r for class k
        rows = torch.cat([rows, roi_features.repeat_interleave(num_classes, dim=0)], dim=1)
    pad = batch_size - len(keep)
    return RoIBatch(
        rows=_pad(rows[keep], pad),
        boxes=_pad(boxes[keep], pad),
        scores=_pad(scores[keep], pad),
        num_detections=num_detections,
    )


def _flatten_candidates(scores, boxes, deltas, limits):
    """(R, K, ...) per-class outputs as R * K candidates, boxes clipped to ``limits``.

    Returns:
        tuple[Tensor]: scores (M,), clipped boxes (M, 4), deltas (M, 4), labels (M,).
    """
    num_classes = scores.shape[1]
    # clip out of place: the caller's tensors stay untouched and gradients flow
    boxes = torch.minimum(boxes.reshape(-1, 4).clamp(min=0), limits)
    scores, deltas = scores.reshape(-1), deltas.reshape(-1, 4)
    labels = torch.arange(num_classes, device=scores.device).repeat(len(scores) // num_classes)
    return scores, boxes, deltas, labels


def _pad(tensor, count):
    """Append ``count`` zero entries along the first dimension."""
    if count <= 0:
        return tensor
    return torch.cat([tensor, tensor.new_zeros((count,) + tuple(tensor.shape[1:]))], dim=0)
