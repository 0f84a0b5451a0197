from .builtin import register_all_ct_lesion, register_ct_lesion_coco
from .classification import register_all_ct_classification, register_ct_classification

__all__ = [
    "register_all_ct_classification",
    "register_all_ct_lesion",
    "register_ct_classification",
    "register_ct_lesion_coco",
]
