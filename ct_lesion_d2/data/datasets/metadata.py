"""Class names of a model, from the metadata of the datasets its config names.

Both helpers read ``MetadataCatalog`` and never write into it: the metadata they return is a
fresh object, so that two configs with different classes can be used in one process.
"""

from detectron2.data import MetadataCatalog
from detectron2.data.catalog import Metadata

__all__ = ["PAPER_IMAGE_CLASSES", "image_class_names", "lesion_metadata"]

# The image classes of COVID-CT-Mask-Net (docs/PAPER.md, section 2).
PAPER_IMAGE_CLASSES = ("Control", "Common Pneumonia", "COVID-19")


def _registered_classes(cfg, num_classes):
    """``thing_classes`` of the config's first test dataset when it has ``num_classes``."""
    if not len(cfg.DATASETS.TEST):
        return None
    names = MetadataCatalog.get(cfg.DATASETS.TEST[0]).get("thing_classes", None)
    return list(names) if names and len(names) == num_classes else None


def lesion_metadata(cfg, name="ct_lesion_predict"):
    """``Visualizer`` metadata with the lesion class names of a segmentation config: those of
    its first test dataset when registered and consistent, else "Lesion" (one class) or
    "GGO", "Consolidation" (two).

    Returns:
        Metadata: a new object (not a ``MetadataCatalog`` entry).
    """
    num_classes = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    names = _registered_classes(cfg, num_classes)
    if names is None:
        names = ["Lesion"] if num_classes == 1 else ["GGO", "Consolidation"][:num_classes]
    return Metadata(name=name, thing_classes=list(names))


def image_class_names(cfg):
    """The image classes of a classifier config: its first test dataset's registered names
    when their number is ``MODEL.CT_CLASSIFIER.NUM_CLASSES``, else the paper's three classes
    (for three) or "class 0", "class 1" ...

    Returns:
        list[str]
    """
    num_classes = cfg.MODEL.CT_CLASSIFIER.NUM_CLASSES
    names = _registered_classes(cfg, num_classes)
    if names is not None:
        return names
    if num_classes == len(PAPER_IMAGE_CLASSES):
        return list(PAPER_IMAGE_CLASSES)
    return [f"class {i}" for i in range(num_classes)]
