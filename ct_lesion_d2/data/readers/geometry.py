"""Where a scan's voxels lie in the patient: the affine of a :class:`Scan`'s pixel grid.

The readers of :mod:`ct_lesion_d2.data.readers` bring axial slices to the radiological view; the
affine here maps that grid, indexed as NIfTI indexes it (column, row, slice) for
``scan.pixels[slice, row, column]``, to RAS+ millimetres (NIfTI's convention; DICOM's LPS+
with x and y negated). It is found again from the input's own headers, so it is exact for what
the reader produced:

- NIfTI: the file's affine, composed with the reader's reorientation;
- DICOM: ImagePositionPatient, ImageOrientationPatient and PixelSpacing of each slice;
- PNG/JPG, or DICOM without position and orientation: no geometry, a spacing-only affine.
"""

import os
from dataclasses import dataclass
from typing import List, Optional

import numpy as np

from .images import IMAGE_EXTENSIONS
from .nifti import NIFTI_EXTENSIONS

__all__ = ["ScanGeometry", "dicom_source_files", "scan_geometry", "stored_to_scan_index"]

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class ScanGeometry:
    """The affine of a scan's grid and where it came from.

    Attributes:
        affine (np.ndarray): 4 x 4, (column, row, slice, 1) of ``scan.pixels`` -> RAS+ mm.
        known (bool): False when the input gave no position or orientation (spacing only).
        description (str): how the affine was obtained, in words (for the report).
        dicom_files (list[str] or None): the DICOM file of each slice, in scan order.
    """

    affine: np.ndarray
    known: bool
    description: str
    dicom_files: Optional[List[str]] = None


def dicom_source_files(scan):
    """The DICOM file of each slice of a DICOM scan, in scan order, or None.

    None for NIfTI and image scans and for multi-frame files (one file, several slices).
    """
    if scan.source.lower().endswith(NIFTI_EXTENSIONS) or any(
        name.lower().endswith(IMAGE_EXTENSIONS) for name in scan.slice_names
    ):
        return None
    if os.path.isdir(scan.source):
        files = [os.path.join(scan.source, name) for name in scan.slice_names]
    elif scan.num_slices == 1:
        files = [scan.source]
    else:
        return None
    return files if all(os.path.isfile(f) for f in files) else None


def _spacing_only(scan, description):
    row, col = scan.spacing_mm or (1.0, 1.0)
    thickness = scan.slice_thickness_mm or 1.0
    return ScanGeometry(np.diag([col, row, thickness, 1.0]), False, description)


def scan_geometry(scan):
    """The geometry of a scan read by :func:`ct_lesion_d2.data.readers.read_scan`.

    Args:
        scan (Scan): read from a NIfTI file, a DICOM file or series, or PNG/JPG slices.

    Returns:
        ScanGeometry
    """
    if scan.source.lower().endswith(NIFTI_EXTENSIONS) and os.path.isfile(scan.source):
        return _nifti_geometry(scan)
    files = dicom_source_files(scan)
    if files is not None:
        return _dicom_geometry(scan, files)
    return _spacing_only(
        scan,
        "none in the input (image files): identity affine with the pixel spacing if known "
        "(1 mm otherwise); no position or orientation",
    )


def _nifti_geometry(scan):
    import nibabel as nib

    image = nib.load(scan.source)
    canonical = nib.as_closest_canonical(image)
    n0, n1 = canonical.shape[:2]
    # read_nifti: scan.pixels[s, r, c] = canonical[n0 - 1 - c, n1 - 1 - r, s]
    flip = np.array([[-1, 0, 0, n0 - 1], [0, -1, 0, n1 - 1], [0, 0, 1, 0], [0, 0, 0, 1]], float)
    # with both codes 0 the header states no orientation; nibabel's affine is then a guess
    known = int(image.header["sform_code"]) > 0 or int(image.header["qform_code"]) > 0
    return ScanGeometry(canonical.affine @ flip, known, "the input NIfTI's affine")


def _stored_affine(ds):
    """(column j, row i, 0, 1) of a DICOM slice's stored pixels -> LPS mm, or None."""
    position, orientation = ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient")
    spacing = ds.get("PixelSpacing")
    if position is None or orientation is None or spacing is None:
        return None
    cosines = np.asarray([float(v) for v in orientation]).reshape(2, 3)
    affine = np.eye(4)
    affine[:3, 0] = cosines[0] * float(spacing[1])
    affine[:3, 1] = cosines[1] * float(spacing[0])
    affine[:3, 2] = np.cross(cosines[0], cosines[1])
    affine[:3, 3] = [float(v) for v in position]
    return affine


def _dicom_geometry(scan, files):
    import pydicom

    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    stored = [_stored_affine(ds) for ds in headers]
    if any(a is None for a in stored):
        geometry = _spacing_only(
            scan, "none in the DICOM headers (no ImagePositionPatient/Orientation or spacing)"
        )
        geometry.dicom_files = files
        return geometry
    rows, cols = int(headers[0].Rows), int(headers[0].Columns)
    origins = []
    if scan.orientation == "axial":
        # the reader's view: columns along +x (patient left), rows along +y (posterior)
        row_mm, col_mm = scan.spacing_mm
        in_plane = np.diag([col_mm, row_mm, 1.0])
        for a in stored:
            corners = [a @ [j, i, 0, 1] for i in (0, rows - 1) for j in (0, cols - 1)]
            origins.append(min(corners, key=lambda p: p[0] + p[1])[:3])
    else:
        in_plane = stored[0][:3, :3].copy()
        origins = [a[:3, 3] for a in stored]
    affine = np.eye(4)
    affine[:3, :2] = in_plane[:, :2]
    if len(origins) > 1:
        affine[:3, 2] = (origins[-1] - origins[0]) / (len(origins) - 1)
    else:
        affine[:3, 2] = stored[0][:3, 2] * (scan.slice_thickness_mm or 1.0)
    affine[:3, 3] = origins[0]
    description = "the DICOM series' ImagePositionPatient, ImageOrientationPatient, PixelSpacing"
    return ScanGeometry(_LPS_TO_RAS @ affine, True, description, files)


def stored_to_scan_index(scan_affine, ds):
    """For each stored pixel of a DICOM slice, the (row, column) of ``scan.pixels`` it became.

    Args:
        scan_affine (np.ndarray): :attr:`ScanGeometry.affine` of the scan.
        ds (pydicom.Dataset): the slice's header (with position, orientation and spacing).

    Returns:
        tuple[np.ndarray, np.ndarray, int]: (Rows, Columns) row and column indices into the
        scan's grid, and the slice index.

    Raises:
        ValueError: the slice does not lie on the scan's grid.
    """
    stored = _LPS_TO_RAS @ _stored_affine(ds)
    index = np.linalg.inv(scan_affine) @ stored  # (j, i, 0, 1) -> (c, r, s, 1)
    rows, cols = int(ds.Rows), int(ds.Columns)
    i, j = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    points = np.stack([j.ravel(), i.ravel(), np.zeros(i.size), np.ones(i.size)])
    c, r, s = (index @ points)[:3]
    grid = np.rint(np.stack([c, r, s]))
    if np.abs(grid - np.stack([c, r, s])).max() > 0.05 or np.ptp(grid[2]) > 0:
        raise ValueError(f"{ds.get('SOPInstanceUID')}: the slice does not lie on the scan grid")
    return (
        grid[1].reshape(rows, cols).astype(int),
        grid[0].reshape(rows, cols).astype(int),
        int(grid[2, 0]),
    )
