"""Slice-level classification records: COVIDx-CT split files and folder-per-class layouts.

Records are Detectron2-style dicts with ``file_name``, ``image_id`` and an int ``class_id``, and
no annotations. COVIDx-CT records also carry the ``patient`` and the body ``crop`` box of the
split file; folder-per-class records carry the ``group`` (patient or source document) that a
train/val/test split must keep whole.
"""

import os
import re

import numpy as np

from .io import DatasetFormatError
from .readers import IMAGE_EXTENSIONS

COVIDX_CLASS_NAMES = ("Normal", "Common Pneumonia", "COVID-19")

# COVIDx-CT names: <Normal|CP|NCP>_<patient>_<scan>_<slice>.png
_COVIDX_NAME = re.compile(r"^(Normal|CP|NCP)_([^_]+)_")
# Page marker of figures cut from papers: "<document>-p<page>-<figure>..."
_PAGE_MARKER = re.compile(r"-p\d+(?=[-_%]|$)")
# Figure index appended to a document id without a page marker: "<document>_<n>"
_FIGURE_SUFFIX = re.compile(r"_\d+$")


def parse_covidx_split(split_file, image_dir, errors=None):
    """Read a COVIDx-CT split file: ``<file> <class> <xmin> <ymin> <xmax> <ymax>`` per line.

    Args:
        split_file (str): e.g. ``train_COVIDx_CT-1.txt``.
        image_dir (str): folder holding the slices (``2A_images``).
        errors (list or None): if given, the error of each bad line is appended to it and the
            line is skipped, instead of raising the first.

    Returns:
        list[dict]: one record per line, in file order, with ``file_name`` (path under
        ``image_dir``), ``image_id`` (the name in the split file), ``class_id`` (0 Normal,
        1 Common Pneumonia, 2 COVID-19), ``patient`` (``<Normal|CP|NCP>_<patient>``, or the file
        stem for names of another pattern) and ``crop`` ([xmin, ymin, xmax, ymax]).

    Raises:
        DatasetFormatError: the split file is missing, or a line (named by its 1-based number) is
            malformed, has an unknown class or an empty box, or names a missing image.
    """
    if not os.path.isfile(split_file):
        raise DatasetFormatError(split_file, "split file not found")
    records = []
    with open(split_file) as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                records.append(_parse_covidx_line(line, split_file, line_no, image_dir))
            except DatasetFormatError as e:
                if errors is None:
                    raise
                errors.append(e)
    return records


def _parse_covidx_line(line, split_file, line_no, image_dir):
    where = f"line {line_no}"
    fields = line.split()
    if len(fields) != 6:
        raise DatasetFormatError(
            split_file,
            f"{where}: expected 6 fields '<file> <class> <xmin> <ymin> <xmax> <ymax>',"
            f" got {len(fields)}: {line.strip()!r}",
        )
    name = fields[0]
    try:
        class_id, xmin, ymin, xmax, ymax = (int(v) for v in fields[1:])
    except ValueError:
        raise DatasetFormatError(
            split_file, f"{where}: class and box must be integers, got {' '.join(fields[1:])!r}"
        ) from None
    if class_id not in range(len(COVIDX_CLASS_NAMES)):
        raise DatasetFormatError(
            split_file, f"{where}: class {class_id} not in 0 (Normal), 1 (CP), 2 (COVID-19)"
        )
    if xmax <= xmin or ymax <= ymin:
        raise DatasetFormatError(
            split_file, f"{where}: empty crop box xmin={xmin} ymin={ymin} xmax={xmax} ymax={ymax}"
        )
    file_name = os.path.join(image_dir, name)
    if not os.path.isfile(file_name):
        raise DatasetFormatError(split_file, f"{where}: image not found: {file_name}")
    match = _COVIDX_NAME.match(name)
    patient = f"{match.group(1)}_{match.group(2)}" if match else os.path.splitext(name)[0]
    return {
        "file_name": file_name,
        "image_id": name,
        "class_id": class_id,
        "patient": patient,
        "crop": [xmin, ymin, xmax, ymax],
    }


def sample_per_class(records, per_class=1000, seed=0):
    """Draw a reproducible sample of at most ``per_class`` records of each class.

    The records of each class are first sorted by ``file_name``, so the sample depends only on
    the set of records, the seed and ``per_class``, not on their order.

    Args:
        records (list[dict]): records with ``class_id`` and ``file_name``.
        per_class (int): records kept per class; a class with fewer keeps all of them.
        seed (int): seed of ``numpy.random.default_rng``.

    Returns:
        list[dict]: the sample, sorted by (``class_id``, ``file_name``).
    """
    rng = np.random.default_rng(seed)
    by_class = {}
    for record in records:
        by_class.setdefault(record["class_id"], []).append(record)
    sample = []
    for class_id in sorted(by_class):
        members = sorted(by_class[class_id], key=lambda r: r["file_name"])
        if len(members) > per_class:
            keep = rng.choice(len(members), size=per_class, replace=False)
            members = [members[i] for i in sorted(keep)]
        sample.extend(members)
    return sample


def source_group(stem):
    """The patient or source document of a folder-per-class file name (UCSD COVID-CT rule).

    In order: the stem up to its first page marker ``-p<digits>`` (figures cut from papers,
    ``2020.03.01.20029769-p21-73_1%2`` -> ``2020.03.01.20029769``); else the part before ``%``
    (several slices of one figure or patient, ``14%2`` -> ``14``); else the stem without a
    trailing figure index ``_<digits>`` (``PIIS0140673620302117_1`` -> ``PIIS0140673620302117``).

    Args:
        stem (str): file name without its extension.

    Returns:
        str: the group id.
    """
    marker = _PAGE_MARKER.search(stem)
    if marker is not None and marker.start() > 0:
        return stem[: marker.start()]
    if "%" in stem:
        return stem.split("%", 1)[0]
    return _FIGURE_SUFFIX.sub("", stem) or stem


def list_class_folders(root, class_folders, group_fn=source_group):
    """Records of a folder-per-class layout, ``<root>/<class folder>/<image>``.

    Args:
        root (str): dataset folder.
        class_folders (Sequence[str]): class folders; the position is the ``class_id``
            (UCSD COVID-CT: ``("CT_NonCOVID", "CT_COVID")``, 0 non-COVID, 1 COVID).
        group_fn (Callable[[str], str]): file stem -> patient or document id.

    Returns:
        list[dict]: ``file_name``, ``image_id`` (``<folder>/<name>``), ``class_id`` and
        ``group`` (``<folder>/<group_fn(stem)>``, so groups never span classes), sorted by
        class then name. Hidden files and files without an image extension are skipped.

    Raises:
        DatasetFormatError: a class folder is missing.
    """
    records = []
    for class_id, folder in enumerate(class_folders):
        path = os.path.join(root, folder)
        if not os.path.isdir(path):
            raise DatasetFormatError(
                path,
                f"class folder not found (expected one folder per class: {list(class_folders)})",
            )
        for name in sorted(os.listdir(path)):
            stem, ext = os.path.splitext(name)
            if name.startswith(".") or ext.lower() not in IMAGE_EXTENSIONS:
                continue
            if not os.path.isfile(os.path.join(path, name)):
                continue
            records.append(
                {
                    "file_name": os.path.join(path, name),
                    "image_id": f"{folder}/{name}",
                    "class_id": class_id,
                    "group": f"{folder}/{group_fn(stem)}",
                }
            )
    return records
