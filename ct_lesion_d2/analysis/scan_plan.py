"""Which scans an input list holds, what their report folders are called, which slices get
figures: the planning steps of ``tools/predict.py``, with no model involved."""

import os
import re

from ..data.io import DatasetFormatError
from ..data.readers import (
    IMAGE_EXTENSIONS,
    NIFTI_EXTENSIONS,
    folder_kind,
    list_dicom_series,
    read_dicom_series,
    read_scan,
)

__all__ = ["plan_scans", "safe_name", "select_panels", "strip_extension"]


def _scan_name(path):
    """Output folder name of an input: its name without extension; a DICOM file's is prefixed
    with its folder, since DICOM file names (IM0001, 0.dcm) rarely say much."""
    name = os.path.basename(os.path.normpath(path))
    stem = strip_extension(name, NIFTI_EXTENSIONS + IMAGE_EXTENSIONS)
    if stem != name:
        return stem
    if os.path.isfile(path):
        parent = os.path.basename(os.path.dirname(os.path.abspath(path)))
        return f"{parent}_{os.path.splitext(name)[0]}"
    return name


def strip_extension(name, extensions=IMAGE_EXTENSIONS + (".dcm",)):
    """``name`` without the first of ``extensions`` it ends with (case-insensitive)."""
    for ext in extensions:
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def safe_name(name):
    """``name`` with every run of characters other than letters, digits, ``._-`` as ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "scan"


def plan_scans(inputs, series_uid=None, all_series=False, image_options=None):
    """(output name, reader) per scan. A DICOM folder of several series gives one scan per
    series with ``all_series``; otherwise reading it refuses with the list of series. Image
    slices are read with ``image_options`` (``ImageInputOptions``).

    Raises:
        DatasetFormatError: an input that does not exist.
    """
    plan, used = [], set()
    for path in inputs:
        if not os.path.exists(path):
            raise DatasetFormatError(path, "input not found")
        readers = [(_scan_name(path), lambda p=path: read_scan(p, series_uid, image_options))]
        if all_series and os.path.isdir(path) and folder_kind(path) == "dicom":
            series = list_dicom_series(path)
            if len(series) > 1:
                readers = [
                    (f"{_scan_name(path)}_series{i}", lambda p=path, u=uid: read_dicom_series(p, u))
                    for i, uid in enumerate(sorted(series), start=1)
                ]
        for name, reader in readers:
            name, k = safe_name(name), 2
            while name in used:
                name = f"{safe_name(readers[0][0])}_{k}"
                k += 1
            used.add(name)
            plan.append((name, reader))
    return plan


def select_panels(report, max_panels):
    """Indices of the slices that get figures: all, or those with the most lesion area."""
    slices = report["slices"]
    if len(slices) <= max_panels:
        return list(range(len(slices)))
    ranked = sorted(slices, key=lambda s: (-s["lesion_area_px"], -s["lesion_count"], s["index"]))
    return sorted(s["index"] for s in ranked[: max(0, max_panels)])
