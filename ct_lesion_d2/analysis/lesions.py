"""Lesions as connected regions of the union of the predicted masks, per slice and per volume.

Mask R-CNN keeps near-duplicate instances (NMS at 0.75 lets several masks cover one lesion), so
instances are not lesions. Here a slice's lesion mask is the union of the masks scoring at
least the report's threshold, and a lesion is one connected region of it (8-connectivity in
the slice). In a volume (slice positions known and evenly spaced) the regions of neighbouring
slices that share a pixel position are one 3D lesion, with a volume in mL where the spacing is
known. Slices without such geometry (PNG folders, uneven gaps) are not joined: each region is
its own lesion, and :attr:`LesionTable.note` says so.
"""

from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np
from scipy import ndimage

__all__ = ["LesionTable", "find_lesions", "slice_spacing_mm", "union_mask"]

# 8-connected in the slice; across slices only the same pixel position (overlap).
_STRUCTURE_2D = np.ones((3, 3), dtype=bool)
_STRUCTURE_3D = np.zeros((3, 3, 3), dtype=bool)
_STRUCTURE_3D[1] = True
_STRUCTURE_3D[0, 1, 1] = _STRUCTURE_3D[2, 1, 1] = True
# Relative deviation of the slice gaps from their median that still counts as even spacing.
_EVEN_SPACING_TOLERANCE = 0.1


@dataclass
class LesionTable:
    """The lesions of a scan.

    Attributes:
        labels (np.ndarray): (S, H, W) uint16 label map, 0 = background, k = lesion k.
        lesions (list[dict]): one per lesion, ids from 1 in order of first appearance: ``id``,
            ``slices`` (indices), ``area_px`` and ``area_mm2`` (summed over slices),
            ``max_slice_area_mm2``, ``volume_ml``, ``mean_score`` and ``max_score`` of the
            instances whose mask overlaps it, ``num_instances``.
        joined_3d (bool): regions of neighbouring slices were joined.
        slice_spacing_mm (float or None): distance between slice centres used for volumes.
        note (str): how the lesions were counted, in words.
    """

    labels: np.ndarray
    lesions: List[dict] = field(default_factory=list)
    joined_3d: bool = False
    slice_spacing_mm: Optional[float] = None
    note: str = ""

    def slice_lesion_ids(self, index):
        """Ids of the lesions present on slice ``index``."""
        return [int(v) for v in np.unique(self.labels[index]) if v]


def union_mask(instances, score_threshold=0.0):
    """(H, W) bool union of the masks of ``instances`` scoring at least ``score_threshold``."""
    height, width = instances.image_size
    keep = instances.scores >= score_threshold
    if not bool(keep.any()):
        return np.zeros((height, width), dtype=bool)
    return instances.pred_masks[keep].numpy().astype(bool).any(axis=0)


def slice_spacing_mm(positions_mm):
    """Distance between neighbouring slices when they are evenly spaced, else None.

    Args:
        positions_mm (Sequence[float] or None): slice positions in scan order.

    Returns:
        float or None: the median gap, None with fewer than two positions, a zero gap or gaps
        deviating from it by more than 10%.
    """
    if positions_mm is None or len(positions_mm) < 2:
        return None
    gaps = np.abs(np.diff(np.asarray(positions_mm, dtype=np.float64)))
    median = float(np.median(gaps))
    if median <= 0 or np.abs(gaps - median).max() > _EVEN_SPACING_TOLERANCE * median:
        return None
    return median


def _round(value, digits=6):
    return None if value is None else round(float(value), digits)


def find_lesions(instances_per_slice, *, score_threshold=0.0, spacing_mm=None, positions_mm=None):
    """Lesions of a stack of slices: connected regions of the union masks, joined in 3D.

    Args:
        instances_per_slice (Sequence[Instances]): per slice, ``pred_masks`` (N, H, W) and
            ``scores`` (N,) on the CPU.
        score_threshold (float): instances scoring below it are ignored.
        spacing_mm (tuple[float, float] or None): (row, column) pixel spacing.
        positions_mm (Sequence[float] or None): slice positions; evenly spaced positions of
            two or more slices make the stack a volume.

    Returns:
        LesionTable
    """
    instances_per_slice = list(instances_per_slice)
    unions = np.stack([union_mask(inst, score_threshold) for inst in instances_per_slice])
    gap = slice_spacing_mm(positions_mm)
    if gap is not None:
        labels, count = ndimage.label(unions, structure=_STRUCTURE_3D)
        note = (
            "lesions are connected regions of the union of the predicted masks, joined across "
            f"neighbouring slices ({gap:.3g} mm apart) into 3D lesions"
        )
    else:
        labels, count = np.zeros(unions.shape, dtype=np.int64), 0
        for s, union in enumerate(unions):
            slice_labels, n = ndimage.label(union, structure=_STRUCTURE_2D)
            labels[s] = np.where(slice_labels > 0, slice_labels + count, 0)
            count += n
        note = "lesions are connected regions of the union of the predicted masks, per slice" + (
            "" if len(unions) < 2 else " (slice positions unknown or uneven: not joined in 3D)"
        )
    labels = _renumber(labels, count)
    pixel_area = float(spacing_mm[0] * spacing_mm[1]) if spacing_mm else None
    lesions = [
        _describe(k, labels, instances_per_slice, score_threshold, pixel_area, gap)
        for k in range(1, count + 1)
    ]
    return LesionTable(labels.astype(np.uint16), lesions, gap is not None, gap, note)


def _renumber(labels, count):
    """Ids in order of first appearance in (slice, row, column) order."""
    if count == 0:
        return labels
    flat = labels.ravel()
    ids = flat[flat > 0]
    _, first = np.unique(ids, return_index=True)
    order = np.unique(ids)[np.argsort(first)]
    lookup = np.zeros(count + 1, dtype=np.int64)
    lookup[order] = np.arange(1, len(order) + 1)
    return lookup[labels]


def _describe(lesion_id, labels, instances_per_slice, score_threshold, pixel_area, gap):
    region = labels == lesion_id
    per_slice = region.reshape(len(region), -1).sum(axis=1)
    slices = [int(s) for s in np.flatnonzero(per_slice)]
    scores = []
    for s in slices:
        inst = instances_per_slice[s]
        keep = inst.scores >= score_threshold
        masks = inst.pred_masks[keep].numpy().astype(bool)
        overlaps = (masks & region[s][None]).reshape(len(masks), -1).any(axis=1)
        scores += inst.scores[keep][overlaps].tolist()
    area_px = int(per_slice.sum())
    area_mm2 = area_px * pixel_area if pixel_area else None
    return {
        "id": lesion_id,
        "slices": slices,
        "area_px": area_px,
        "area_mm2": _round(area_mm2, 3),
        "max_slice_area_mm2": _round(per_slice.max() * pixel_area, 3) if pixel_area else None,
        "volume_ml": _round(area_mm2 * gap / 1000.0, 6) if area_mm2 is not None and gap else None,
        "mean_score": _round(np.mean(scores)) if scores else None,
        "max_score": _round(np.max(scores)) if scores else None,
        "num_instances": len(scores),
    }
