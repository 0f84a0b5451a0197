"""Readers of CT data, each with errors that name the file: DICOM files and series
(``dicom``), NIfTI volumes (``nifti``), image slices and label masks (``images``), and
:func:`read_scan`, which picks the reader for a path. All return a :class:`Scan` (``scan``)."""

import os

from ..io import DatasetFormatError
from .dicom import list_dicom_series, read_dicom_file, read_dicom_series
from .images import (
    BINARY,
    IMAGE_EXTENSIONS,
    is_high_bit_depth,
    list_image_files,
    read_binary_mask,
    read_grey_image,
    read_image_slices,
    read_label_mask,
    read_mask,
    verify_jpeg,
)
from .nifti import NIFTI_EXTENSIONS, read_nifti, write_nifti
from .scan import PADDING_BELOW_HU, PADDING_HU, Scan, _folder_files

__all__ = [
    "BINARY",
    "IMAGE_EXTENSIONS",
    "NIFTI_EXTENSIONS",
    "PADDING_BELOW_HU",
    "PADDING_HU",
    "Scan",
    "folder_kind",
    "is_high_bit_depth",
    "list_dicom_series",
    "list_image_files",
    "read_binary_mask",
    "read_dicom_file",
    "read_dicom_series",
    "read_grey_image",
    "read_image_slices",
    "read_label_mask",
    "read_mask",
    "read_nifti",
    "read_scan",
    "verify_jpeg",
    "write_nifti",
]


def _looks_like_dicom(path):
    if path.lower().endswith((".dcm", ".dicom", ".ima")):
        return True
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def folder_kind(folder):
    """What a scan folder holds: "dicom" or "images" (PNG/JPG slices).

    Files with a DICOM extension or marker count as DICOM; extension-less files that are not
    images are taken for DICOM too (the reader then names any that is not).

    Raises:
        DatasetFormatError: the folder is missing or empty, or mixes DICOM and images.
    """
    files = _folder_files(folder)
    if not files:
        raise DatasetFormatError(folder, "folder holds no files")
    images = [p for p in files if p.lower().endswith(IMAGE_EXTENSIONS)]
    if images and any(_looks_like_dicom(p) for p in files):
        raise DatasetFormatError(folder, "folder mixes DICOM files and image slices")
    return "images" if images else "dicom"


def read_scan(path, series_uid=None, image_options=None):
    """Read whatever ``path`` is: a NIfTI volume, an image slice, a DICOM file, a folder of
    DICOM slices (one series) or a folder of image slices.

    Args:
        path (str): file or folder.
        series_uid (str or None): for a DICOM folder holding several series.
        image_options (ImageInputOptions or None): for image slices, see
            :func:`read_image_slices`.

    Returns:
        Scan

    Raises:
        DatasetFormatError: names the path or the offending file.
    """
    path = str(path)
    if os.path.isdir(path):
        if folder_kind(path) == "images":
            return read_image_slices(path, image_options)
        return read_dicom_series(path, series_uid)
    if not os.path.exists(path):
        raise DatasetFormatError(path, "file or folder not found")
    lower = path.lower()
    if lower.endswith(NIFTI_EXTENSIONS):
        return read_nifti(path)
    if lower.endswith(IMAGE_EXTENSIONS):
        return read_image_slices(path, image_options)
    return read_dicom_file(path)
