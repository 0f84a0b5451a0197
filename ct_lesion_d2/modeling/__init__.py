from .backbone import build_ct_lesion_resnet_fpn_backbone
from .gather_roi_align import GatherROIAlign, gather_roi_align, use_gather_roi_align
from .meta_arch import CTMaskNetClassifier
from .roi_heads import CTLesionROIHeads

__all__ = [
    "CTLesionROIHeads",
    "CTMaskNetClassifier",
    "GatherROIAlign",
    "build_ct_lesion_resnet_fpn_backbone",
    "gather_roi_align",
    "use_gather_roi_align",
]
