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
from ..validation import ValidationReport, check_coco, coco_image_root, load_json

# key -> (thing classes, how to make it)
_LESION_DATASETS = {
    "cncb": (["Lesion"], "cncb <ct_lesion_seg folder>"),
    "cncb_sep": (["GGO", "Consolidation"], "cncb <ct_lesion_seg folder> --separate"),
    "medseg100": (["Lesion"], "binary-folder <medseg100 folder>"),
    "covid19_ct_seg": (["Lesion"], "covid19-ct-seg <covid19_ct_seg folder>"),
    "medseg_multiclass": (["Lesion"], "medseg-multiclass <folder>"),
    "medseg_multiclass_sep": (["GGO", "Consolidation"], "medseg-multiclass <folder> --separate"),
    "synthetic": (["Lesion"], "synthetic"),
}


def load_ct_lesion_coco(json_file, dataset_name=None, hint=None):
    """Load a COCO JSON written by the converters, reading its image root from ``info``.

    Before Detectron2 reads it, the cheap checks of ``validation.check_coco`` run (structure,
    image files present, dangling annotations, boxes and polygons, mask sizes), and the other
    splits written by the same conversion must carry its conversion id.

    Args:
        hint (str or None): ``tools/convert_dataset.py`` arguments that create the file.

    Raises:
        DatasetFormatError: the JSON is missing, malformed, fails a check, or was not written by
            the converters.
    """
    if not os.path.isfile(json_file):
        how = f"python tools/convert_dataset.py {hint or '<layout> <folder>'} --output "
        raise DatasetFormatError(
            json_file,
            f"annotation file not found; create it with: {how}"
            f"{os.path.dirname(os.path.dirname(json_file))}",
        )
    report = ValidationReport()
    coco = load_json(json_file, report)
    report.raise_if_errors(json_file)
    image_root = coco_image_root(coco, json_file)
    if image_root is None:
        raise DatasetFormatError(
            json_file, "no info.image_root; write it with tools/convert_dataset.py"
        )
    check_coco(coco, json_file, image_root, report)
    hint = f"List every problem with: python tools/validate_dataset.py coco {json_file}"
    report.raise_if_errors(json_file, hint=hint)
    _check_same_conversion(json_file, coco["info"])
    return load_coco_json(json_file, image_root, dataset_name)


def _check_same_conversion(json_file, info):
    conversion = info.get("conversion")
    if conversion is None:
        return  # written before conversion ids existed
    folder = os.path.dirname(json_file)
    for split in info.get("splits", []):
        other = os.path.join(folder, f"{split}.json")
        if os.path.abspath(other) == os.path.abspath(json_file) or not os.path.isfile(other):
            continue
        with open(other) as f:
            try:
                other_id = (json.load(f).get("info") or {}).get("conversion")
            except ValueError:
                other_id = "<unreadable>"
        if other_id != conversion:
            raise DatasetFormatError(
                json_file,
                f"was written by another conversion than {other} (an interrupted --overwrite?); "
                "convert the dataset again with --overwrite",
            )


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
