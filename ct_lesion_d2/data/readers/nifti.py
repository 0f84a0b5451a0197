"""NIfTI volumes as a :class:`Scan` in Hounsfield units, and writing one back."""

import os
import warnings

import numpy as np

from ..io import DatasetFormatError
from .geometry import nifti_volume_grid, non_axial_input, resampled_note
from .scan import NIFTI_EXTENSIONS, PADDING_BELOW_HU, PADDING_HU, Scan

__all__ = ["NIFTI_EXTENSIONS", "read_nifti", "write_nifti"]


def read_nifti(path):
    """Read a NIfTI volume (HU) as axial slices in the radiological view.

    The volume is reoriented to the closest RAS+ axes (as ``nibabel.as_closest_canonical``
    does); each slice along the third axis becomes ``data[::-1, ::-1, k].T`` (rows anterior to
    posterior, columns right to left), slices ordered inferior to superior. A volume stored in
    coronal or sagittal slices is so resampled to axial slices, its spacing kept
    (``resampled_from`` and a note say so). An oblique volume (an axis of the affine not along
    a patient axis) and a single non-axial slice are kept as stored (``pixels[k] =
    data[:, :, k].T``, ``orientation`` "as stored"), with a warning. NaN and infinite voxels
    (with a warning) and values below ``PADDING_BELOW_HU`` are padding: set to ``PADDING_HU``
    and flagged in ``padding_mask``.

    Args:
        path (str): ``.nii`` or ``.nii.gz`` file, 2-D or 3-D (a 4-D one with one volume).

    Returns:
        Scan: pixels in HU; spacing from the voxel sizes.

    Raises:
        DatasetFormatError: missing or unreadable file, or more than one volume.
    """
    import nibabel as nib

    if not os.path.isfile(path):
        raise DatasetFormatError(path, "file not found")
    try:
        image = nib.load(path)
        data = np.asarray(image.dataobj, dtype=np.float32)
    except Exception as e:
        raise DatasetFormatError(path, f"cannot read NIfTI volume ({type(e).__name__}: {e})")
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[..., None]
    if data.ndim != 3:
        raise DatasetFormatError(path, f"expected a 3-D volume; got shape {data.shape}")
    invalid = ~np.isfinite(data)
    if invalid.any():
        warnings.warn(
            f"{path}: {int(invalid.sum())} NaN or infinite voxels set to padding ({PADDING_HU} HU)"
        )
        data[invalid] = PADDING_HU
    invalid |= data < PADDING_BELOW_HU
    data[invalid] = PADDING_HU
    if data.max() <= 255 and data.min() >= 0:
        warnings.warn(f"{path}: values lie in 0..255; is this an 8-bit image rather than HU?")
    grid, plane = nifti_volume_grid(image)
    pixels, padding = grid.to_scan(data), grid.to_scan(invalid)
    name = os.path.basename(path)
    scan = Scan(
        pixels=pixels,
        is_hu=True,
        spacing_mm=grid.spacing_mm,
        slice_thickness_mm=grid.slice_spacing_mm,
        slice_names=[f"{name}[{k}]" for k in range(pixels.shape[0])],
        source=str(path),
        positions_mm=grid.positions_mm,
        padding_mask=padding,
        orientation="axial" if grid.radiological else "as stored",
        stored_orientation=plane,
    )
    if not grid.radiological:
        warnings.warn(f"{path}: {non_axial_input(scan)}; kept as stored")
    elif plane != "axial":
        scan.resampled_from = plane
        scan.notes.append(resampled_note(scan, data.shape[2]))
    return scan


def write_nifti(scan, path, pixels=None):
    """Write a scan (or another (S, H, W) volume on its grid, e.g. a lesion mask) as NIfTI.

    The inverse of :func:`read_nifti` for axial scans: columns run to the patient's left,
    rows to posterior and slices to superior, with the scan's spacing (1 mm where unknown).

    Args:
        scan (Scan): gives the geometry.
        path (str): ``.nii`` or ``.nii.gz``; an existing file is replaced.
        pixels (np.ndarray or None): (S, H, W) values to write instead of ``scan.pixels``.
    """
    import nibabel as nib

    volume = scan.pixels if pixels is None else np.asarray(pixels)
    if volume.shape != scan.pixels.shape:
        raise ValueError(f"volume shape {volume.shape} differs from the scan's {scan.pixels.shape}")
    row, col = scan.spacing_mm or (1.0, 1.0)
    thickness = scan.slice_thickness_mm or 1.0
    origin = scan.positions_mm[0] if scan.positions_mm else 0.0
    affine = np.diag([-col, -row, thickness, 1.0])
    affine[2, 3] = origin
    data = np.ascontiguousarray(volume.transpose(2, 1, 0))
    nib.save(nib.Nifti1Image(data, affine), path)
