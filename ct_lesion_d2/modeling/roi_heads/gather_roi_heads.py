"""Detectron2's standard RoI heads with the option of pooling RoIs by a multi-threaded gather.

``MODEL.ROI_HEADS.NAME: "CTLesionROIHeads"`` builds exactly :class:`StandardROIHeads` (same
modules, parameters and checkpoint keys); with ``MODEL.CT_ROI_POOLING.GATHER: True`` its RoIAlign
levels become :class:`~ct_lesion_d2.modeling.gather_roi_align.GatherROIAlign`, the same
computation to float rounding, forward and backward, but vectorised and multi-threaded on the
CPU where torchvision's kernel runs on one core (``docs/BENCHMARKS.md``).
"""
import logging

from detectron2.modeling import ROI_HEADS_REGISTRY, StandardROIHeads
from detectron2.modeling.poolers import ROIPooler

from ..gather_roi_align import use_gather_roi_align

__all__ = ["CTLesionROIHeads"]

logger = logging.getLogger(__name__)


@ROI_HEADS_REGISTRY.register()
class CTLesionROIHeads(StandardROIHeads):
    """``StandardROIHeads`` whose poolers use :class:`GatherROIAlign` when
    ``MODEL.CT_ROI_POOLING.GATHER`` is set (box, mask and keypoint poolers alike)."""

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        if cfg.MODEL.CT_ROI_POOLING.GATHER:
            wrapped = {
                key: use_gather_roi_align(value)
                for key, value in ret.items()
                if isinstance(value, ROIPooler)
            }
            logger.info(f"CTLesionROIHeads: RoIAlign levels pooled as gathers: {wrapped}")
        return ret
