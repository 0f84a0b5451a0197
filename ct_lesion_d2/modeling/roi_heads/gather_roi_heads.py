"""Detectron2's standard RoI heads with the option of pooling RoIs by a multi-threaded gather.

``MODEL.ROI_HEADS.NAME: "CTLesionROIHeads"`` builds exactly :class:`StandardROIHeads` (same
modules, parameters and checkpoint keys); with ``MODEL.CT_ROI_POOLING.GATHER: True`` its RoIAlign
levels become :class:`~ct_lesion_d2.modeling.gather_roi_align.GatherROIAlign`, the same
computation to float rounding, forward and backward, but vectorised and multi-threaded on the
CPU where torchvision's kernel runs on one core (``docs/BENCHMARKS.md``). The key also keeps
the ground-truth bit masks of the sampled proposals as indices into the image's masks
(:class:`IndexedBitMasks`) rather than one full-size copy per proposal (256 x H x W per image).
"""

import logging

import torch
from detectron2.config import configurable
from detectron2.layers import ROIAlign
from detectron2.modeling import ROI_HEADS_REGISTRY, StandardROIHeads
from detectron2.modeling.poolers import ROIPooler
from detectron2.structures import BitMasks, Instances

from ..gather_roi_align import use_gather_roi_align

__all__ = ["CTLesionROIHeads", "IndexedBitMasks"]

logger = logging.getLogger(__name__)


class IndexedBitMasks(BitMasks):
    """The bit masks ``source[index]``, kept as the index until the masks themselves are needed.

    Indexing composes indices, and :meth:`crop_and_resize` (the Mask R-CNN targets) reads the
    source masks by index; anything else gets the selected masks from :attr:`tensor`.
    """

    def __init__(self, source, index):
        """
        Args:
            source (Tensor): (N, H, W) bool masks of one image.
            index (Tensor): (M,) int64 indices into ``source``.
        """
        self.source = source
        self.index = index
        self.image_size = source.shape[1:]

    @property
    def tensor(self):
        return self.source[self.index]

    @property
    def device(self):
        return self.source.device

    def to(self, *args, **kwargs):
        return IndexedBitMasks(self.source.to(*args, **kwargs), self.index.to(self.source.device))

    def __len__(self):
        return self.index.shape[0]

    def __getitem__(self, item):
        index = self.index[item]
        return IndexedBitMasks(self.source, index.reshape(-1) if index.dim() == 0 else index)

    def crop_and_resize(self, boxes, mask_size):
        """As :meth:`BitMasks.crop_and_resize`: each mask cropped by its box and resized."""
        assert len(boxes) == len(self), f"{len(boxes)} != {len(self)}"
        rois = torch.cat([self.index.to(boxes.dtype)[:, None], boxes], dim=1)
        pooler = ROIAlign((mask_size, mask_size), 1.0, 0, aligned=True)
        source = self.source.to(dtype=torch.float32)[:, None]
        return pooler(source, rois.to(self.device)).squeeze(1) >= 0.5


@ROI_HEADS_REGISTRY.register()
class CTLesionROIHeads(StandardROIHeads):
    """``StandardROIHeads`` whose poolers use :class:`GatherROIAlign` when
    ``MODEL.CT_ROI_POOLING.GATHER`` is set (box, mask and keypoint poolers alike)."""

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret["index_gt_masks"] = cfg.MODEL.CT_ROI_POOLING.GATHER
        if cfg.MODEL.CT_ROI_POOLING.GATHER:
            wrapped = {
                key: use_gather_roi_align(value)
                for key, value in ret.items()
                if isinstance(value, ROIPooler)
            }
            logger.info(f"CTLesionROIHeads: RoIAlign levels pooled as gathers: {wrapped}")
        return ret

    @configurable
    def __init__(self, *, index_gt_masks=False, **kwargs):
        """
        Args:
            index_gt_masks (bool): keep the sampled proposals' ground-truth bit masks as
                :class:`IndexedBitMasks`.
            kwargs: as :class:`StandardROIHeads`.
        """
        super().__init__(**kwargs)
        self.index_gt_masks = index_gt_masks

    def label_and_sample_proposals(self, proposals, targets):
        if self.index_gt_masks:
            targets = [_index_gt_masks(t) for t in targets]
        return super().label_and_sample_proposals(proposals, targets)


def _index_gt_masks(targets):
    """A shallow copy of one image's ``Instances`` whose ``BitMasks`` are indexed lazily."""
    masks = targets.get("gt_masks") if targets.has("gt_masks") else None
    if type(masks) is not BitMasks:
        return targets
    copy = Instances(targets.image_size, **targets.get_fields())
    copy.gt_masks = IndexedBitMasks(masks.tensor, torch.arange(len(masks), device=masks.device))
    return copy
