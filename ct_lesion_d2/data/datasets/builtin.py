"""Lesion datasets in ``DatasetCatalog``, converted to COCO JSON by ``tools/convert_dataset.py``.

Each dataset ``<key>`` lives under ``$DETECTRON2_DATASETS/<key>/annotations/{train,val}.json``
(Detectron2's convention: the root defaults to ``./datasets``). The JSON records its image
root, so the source images are read where they are and never copied.
"""
import json
import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

from ..io import DatasetFormatError

# key -> (thing classes, how to make it)
_LESION_DATASETS = {
    "cncb": (["Lesion"], "cncb <ct_lesion_seg folder>"),
    "cncb_sep": (["GGO", "Consolidation"], "cncb <ct_lesion_seg folder> --separate"),
    "medseg100": (["Lesion"], "binary-folder <medseg100 folder>"),
    "medseg_multiclass": (["Lesion"], "medseg-multiclass <folder>"),
    "medseg_multiclass_sep": (["GGO", "Consolidation"], "medseg-multiclass <folder> --separate"),
    "synthetic": (["Lesion"], "synthetic"),
}


def load_ct_lesion_coco(json_file, dataset_name=None, hint=None):
    """Load a COCO JSON written by the converters, reading its image root from ``info``.

    Args:
        hint (str or None): ``tools/convert_dataset.py`` arguments that create the file.

    Raises:
        DatasetFormatError: the JSON is missing or was not written by the converters.
    """
    if not os.path.isfile(json_file):
        how = f"python tools/convert_dataset.py {hint or '<layout> <folder>'} --output "
        raise DatasetFormatError(
            json_file, f"annotation file not found; create it with: {how}"
            f"{os.path.dirname(os.path.dirname(json_file))}"
        )
    with open(json_file) as f:
        image_root = json.load(f).get("info", {}).get("image_root")
    if image_root is None:
        raise DatasetFormatError(json_file, "no info.image_root; write it with tools/convert_dataset.py")
    if not os.path.isabs(image_root):
        image_root = os.path.join(os.path.dirname(json_file), image_root)
    return load_coco_json(json_file, image_root, dataset_name)


def register_ct_lesion_coco(name, json_file, thing_classes=None, hint=None):
    """Register one converted COCO JSON in ``DatasetCatalog`` (no-op if ``name`` is registered).

    Args:
        name (str): dataset name.
        json_file (str): path written by the converters.
        thing_classes (list[str] or None): category names, when known before loading.
        hint (str or None): ``tools/convert_dataset.py`` arguments that create the file.
    """
    if name in DatasetCatalog.list():
        return
    DatasetCatalog.register(name, lambda: load_ct_lesion_coco(json_file, name, hint))
    meta = {"json_file": json_file, "evaluator_type": "coco"}
    if thing_classes is not None:
        meta["thing_classes"] = list(thing_classes)
    MetadataCatalog.get(name).set(**meta)


def register_all_ct_lesion(root):
    """Register ``ct_lesion_<key>_{train,val}`` for every built-in lesion dataset under ``root``."""
    for key, (classes, hint) in _LESION_DATASETS.items():
        for split in ("train", "val"):
            json_file = os.path.join(root, key, "annotations", f"{split}.json")
            register_ct_lesion_coco(f"ct_lesion_{key}_{split}", json_file, classes, hint)


register_all_ct_lesion(os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets")))
