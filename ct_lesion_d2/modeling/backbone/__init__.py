from .resnet_fpn1 import build_ct_lesion_resnet_fpn_backbone

__all__ = ["build_ct_lesion_resnet_fpn_backbone"]
