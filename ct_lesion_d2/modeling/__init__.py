from .backbone import build_ct_lesion_resnet_fpn_backbone
from .meta_arch import CTMaskNetClassifier

__all__ = ["CTMaskNetClassifier", "build_ct_lesion_resnet_fpn_backbone"]
