from .builtin import register_all_ct_lesion, register_ct_lesion_coco

__all__ = ["register_all_ct_lesion", "register_ct_lesion_coco"]
