"""Slice classification datasets in ``DatasetCatalog``: COVIDx-CT and UCSD COVID-CT.

Both are read where they are, under ``$DETECTRON2_DATASETS`` (default ``./datasets``), and
only when a dataset is first loaded, so importing the package never needs the data:

- ``ct_covidx_{train,val,test}``: ``COVIDx-CT/{train,val,test}_COVIDx_CT-1.txt`` with the
  slices in ``COVIDx-CT/2A_images/``; train is a per-class sample (1,000 slices of each class,
  seed 0, as in COVID-CT-Mask-Net), val and test are complete.
- ``ct_ucsd_{train,val,test}``: ``ucsd_covid_ct/CT_NonCOVID`` (0) and ``CT_COVID`` (1), split
  70/15/15 by patient or source document (seed 0).

Records have an int ``class_id``; the metadata has the class names (``thing_classes``, which
Detectron2 also answers to ``class_names``) and ``evaluator_type = "ct_classification"``.
"""

import os

from detectron2.data import DatasetCatalog, MetadataCatalog

from ..classification import (
    COVIDX_CLASS_NAMES,
    list_class_folders,
    parse_covidx_split,
    sample_per_class,
)
from ..io import DatasetFormatError
from ..splits import split_records_by_group

COVIDX_DIR = "COVIDx-CT"
COVIDX_IMAGES = "2A_images"
COVIDX_SPLIT_FILE = "{}_COVIDx_CT-1.txt"
COVIDX_TRAIN_PER_CLASS = 1000

UCSD_DIR = "ucsd_covid_ct"
UCSD_CLASS_FOLDERS = ("CT_NonCOVID", "CT_COVID")
UCSD_CLASS_NAMES = ("non-COVID", "COVID")
UCSD_VAL_FRACTION = 0.15
UCSD_TEST_FRACTION = 0.15

SPLITS = ("train", "val", "test")


def load_covidx_split(root, split, per_class=None, seed=0):
    """Records of one COVIDx-CT v1 split under ``<root>/COVIDx-CT``.

    Args:
        root (str): the datasets root.
        split (str): ``"train"``, ``"val"`` or ``"test"``.
        per_class (int or None): keep a per-class sample of this size (see
            ``sample_per_class``); None keeps every slice.
        seed (int): seed of the sample.

    Returns:
        list[dict]: records of ``parse_covidx_split``.

    Raises:
        DatasetFormatError: the split file or an image is missing, or a line is malformed.
    """
    folder = os.path.join(root, COVIDX_DIR)
    split_file = os.path.join(folder, COVIDX_SPLIT_FILE.format(split))
    if not os.path.isfile(split_file):
        raise DatasetFormatError(
            split_file,
            f"COVIDx-CT split file not found; expected {COVIDX_SPLIT_FILE.format(split)}"
            f" with the slices in {os.path.join(folder, COVIDX_IMAGES)} (set DETECTRON2_DATASETS)",
        )
    records = parse_covidx_split(split_file, os.path.join(folder, COVIDX_IMAGES))
    if per_class is not None:
        records = sample_per_class(records, per_class, seed)
    return records


def load_ucsd_split(root, split, seed=0):
    """Records of one split of UCSD COVID-CT under ``<root>/ucsd_covid_ct``.

    Args:
        root (str): the datasets root.
        split (str): ``"train"``, ``"val"`` or ``"test"``.
        seed (int): seed of the group split (70/15/15 of the groups).

    Returns:
        list[dict]: records of ``list_class_folders`` (``class_id`` 0 non-COVID, 1 COVID).

    Raises:
        DatasetFormatError: a class folder is missing or holds no image.
    """
    folder = os.path.join(root, UCSD_DIR)
    if not os.path.isdir(folder):
        raise DatasetFormatError(
            folder,
            f"UCSD COVID-CT folder not found; expected the class folders "
            f"{', '.join(UCSD_CLASS_FOLDERS)} in it (set DETECTRON2_DATASETS)",
        )
    records = list_class_folders(folder, UCSD_CLASS_FOLDERS)
    if not records:
        raise DatasetFormatError(folder, f"no images in the class folders {UCSD_CLASS_FOLDERS}")
    splits = split_records_by_group(records, UCSD_VAL_FRACTION, UCSD_TEST_FRACTION, seed)
    return splits[split]


def register_ct_classification(name, records_fn, class_names):
    """Register a slice classification dataset (no-op if ``name`` is already registered).

    Args:
        name (str): dataset name.
        records_fn (Callable[[], list[dict]]): returns records with an int ``class_id``;
            called only when the dataset is loaded.
        class_names (Sequence[str]): name of each ``class_id``, stored as metadata
            ``thing_classes`` (alias ``class_names``); their number is the number of classes.
    """
    if name in DatasetCatalog.list():
        return
    DatasetCatalog.register(name, records_fn)
    # Detectron2 stores metadata "class_names" as "thing_classes" (with a warning on each
    # access); setting that key directly keeps both spellings readable and the log quiet.
    MetadataCatalog.get(name).set(
        thing_classes=list(class_names), evaluator_type="ct_classification"
    )


def register_all_ct_classification(root):
    """Register ``ct_covidx_{train,val,test}`` and ``ct_ucsd_{train,val,test}`` under ``root``."""
    for split in SPLITS:
        per_class = COVIDX_TRAIN_PER_CLASS if split == "train" else None
        register_ct_classification(
            f"ct_covidx_{split}",
            lambda split=split, per_class=per_class: load_covidx_split(root, split, per_class),
            COVIDX_CLASS_NAMES,
        )
        register_ct_classification(
            f"ct_ucsd_{split}", lambda split=split: load_ucsd_split(root, split), UCSD_CLASS_NAMES
        )


register_all_ct_classification(os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets")))
