from .builtin import register_all_ct_lesion, register_ct_lesion_coco
from .classification import register_all_ct_classification, register_ct_classification
from .metadata import PAPER_IMAGE_CLASSES, image_class_names, lesion_metadata

__all__ = [
    "PAPER_IMAGE_CLASSES",
    "image_class_names",
    "lesion_metadata",
    "register_all_ct_classification",
    "register_all_ct_lesion",
    "register_ct_classification",
    "register_ct_lesion_coco",
]
