"""Where a scan's voxels lie in the patient: the orientation of its slices and the affine of a
:class:`Scan`'s pixel grid.

The readers of :mod:`ct_lesion_d2.data.readers` bring axial slices to the radiological view
and resample axis-aligned coronal and sagittal volumes to axial slices (:class:`VolumeGrid`;
an axis-aligned volume is resampled by reordering its voxels, so the spacing is the volume's
and nothing is interpolated). A single non-axial slice and oblique slices (direction cosines
not along the patient axes) are kept as stored, and :func:`non_axial_input` says so in words.

The affine here maps the scan's grid, indexed as NIfTI indexes it (column, row, slice) for
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
from .scan import NIFTI_EXTENSIONS

__all__ = [
    "ScanGeometry",
    "VolumeGrid",
    "axial_slice_transform",
    "dicom_source_files",
    "nifti_volume_grid",
    "non_axial_input",
    "resampled_note",
    "scan_geometry",
    "series_affine",
    "slice_normal",
    "slice_plane",
    "stored_to_scan_index",
    "volume_plane",
]

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
# |direction cosine| from which a direction runs along a patient axis (within about 8 degrees).
_ALIGNED = 0.99
# The plane of a slice, by the patient axis (x, y, z) normal to it.
_PLANES = ("sagittal", "coronal", "axial")
# Deviation of a series' slice gaps from their mean (a fraction of it) that still forms a volume.
_EVEN_GAPS = 0.02


@dataclass
class ScanGeometry:
    """The affine of a scan's grid and where it came from.

    Attributes:
        affine (np.ndarray): 4 x 4, (column, row, slice, 1) of ``scan.pixels`` -> RAS+ mm.
        known (bool): False when the input gave no position or orientation (spacing only).
        description (str): how the affine was obtained, in words (for the report).
        dicom_files (list[str] or None): the DICOM file of each stored slice, in scan order
            (of a resampled series: in the order of its positions).
    """

    affine: np.ndarray
    known: bool
    description: str
    dicom_files: Optional[List[str]] = None


def _plane(directions, check):
    """The plane spanned by the first two of ``directions`` (unit rows), or "oblique" when
    one of the rows in ``check`` does not run along a patient axis."""
    directions = np.asarray(directions, dtype=float)
    directions = directions / np.linalg.norm(directions, axis=1, keepdims=True)
    axes = np.abs(directions).argmax(axis=1)
    if (np.abs(directions[check]).max(axis=1) < _ALIGNED).any() or len(set(axes[check])) < len(
        check
    ):
        return "oblique"
    return _PLANES[3 - axes[0] - axes[1]]


def slice_plane(orientation):
    """The plane of a DICOM slice from its ImageOrientationPatient.

    Args:
        orientation (Sequence[float] or None): row and column direction cosines (six values).

    Returns:
        str or None: "axial", "coronal", "sagittal" or "oblique"; None without orientation.
    """
    if orientation is None:
        return None
    cosines = np.asarray([float(v) for v in orientation]).reshape(2, 3)
    return _plane(cosines, [0, 1])


def volume_plane(affine):
    """The plane of a volume's slices (voxel axes 0 and 1): "axial", "coronal", "sagittal", or
    "oblique" when any voxel axis, the slice axis too, is not along a patient axis."""
    return _plane(np.asarray(affine, dtype=float)[:3, :3].T, [0, 1, 2])


def slice_normal(orientation):
    """The unit normal of a DICOM slice (LPS), +z without orientation."""
    if orientation is None:
        return np.array([0.0, 0.0, 1.0])
    cosines = np.asarray([float(v) for v in orientation]).reshape(2, 3)
    return np.cross(cosines[0], cosines[1])


def axial_slice_transform(orientation):
    """How to bring an axis-aligned axial DICOM slice to the radiological view.

    Args:
        orientation (Sequence[float] or None): ImageOrientationPatient (row, column cosines).

    Returns:
        tuple or None: (transpose, flip_rows, flip_columns), or None if not axis-aligned axial.
    """
    if orientation is None:
        return (False, False, False)
    if slice_plane(orientation) != "axial":
        return None
    cosines = np.asarray([float(v) for v in orientation]).reshape(2, 3)
    transpose = bool(np.abs(cosines[0]).argmax() == 1)
    row_cos, col_cos = (cosines[1], cosines[0]) if transpose else (cosines[0], cosines[1])
    # after the transpose, columns must run along +x (patient left), rows along +y (posterior)
    return transpose, bool(col_cos[1] < 0), bool(row_cos[0] < 0)


class VolumeGrid:
    """A volume's voxels as a scan's slices, and back.

    The volume is indexed as NIfTI indexes it, ``volume[i, j, k]``, and ``affine`` maps
    (i, j, k, 1) to RAS+ mm. With ``radiological`` (an axis-aligned volume, whatever plane
    it was stored in) the volume is reordered to the closest RAS+ axes (nibabel's
    ``as_closest_canonical``) and each slice along the third becomes
    ``canonical[::-1, ::-1, k].T``: axial slices, rows anterior to posterior, columns right to
    left, slices inferior to superior. Otherwise the slices are the volume's third axis as
    stored: ``pixels[k] = volume[:, :, k].T``.

    Attributes:
        radiological (bool): the scan's slices are axial in the radiological view.
        affine (np.ndarray): (column, row, slice, 1) of the scan's pixels -> RAS+ mm.
        spacing_mm (tuple[float, float]): (row, column) pixel spacing of the scan's slices.
        slice_spacing_mm (float): distance between the scan's slices.
        positions_mm (list[float]): position of each slice along the slice normal.
    """

    def __init__(self, affine, shape, radiological=True):
        from nibabel.orientations import inv_ornt_aff, io_orientation

        affine = np.asarray(affine, dtype=float)
        shape = tuple(int(n) for n in shape)
        if radiological:
            self._ornt = io_orientation(affine)
        else:
            self._ornt = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)
        self._flip = self.radiological = radiological
        canonical = [0, 0, 0]
        for axis, (target, _) in enumerate(self._ornt):
            canonical[int(target)] = shape[axis]
        self.affine = affine @ inv_ornt_aff(self._ornt, shape)
        if radiological:  # pixels[s, r, c] = canonical[n0 - 1 - c, n1 - 1 - r, s]
            n0, n1 = canonical[:2]
            flip = np.array([[-1, 0, 0, n0 - 1], [0, -1, 0, n1 - 1], [0, 0, 1, 0], [0, 0, 0, 1]])
            self.affine = self.affine @ flip
        lengths = np.linalg.norm(self.affine[:3, :3], axis=0)
        self.spacing_mm = (float(lengths[1]), float(lengths[0]))
        self.slice_spacing_mm = float(lengths[2])
        normal = self.affine[:3, 2] / lengths[2]
        self.positions_mm = [
            float(normal @ (self.affine[:3, 3] + k * self.affine[:3, 2]))
            for k in range(canonical[2])
        ]

    def to_scan(self, volume):
        """(S, H, W) scan pixels of ``volume[i, j, k]``."""
        from nibabel.orientations import apply_orientation

        data = apply_orientation(np.asarray(volume), self._ornt)
        if self._flip:
            data = data[::-1, ::-1, :]
        return np.ascontiguousarray(data.transpose(2, 1, 0))

    def to_volume(self, pixels):
        """``pixels`` (S, H, W) on the scan's grid put back in the volume's voxel order."""
        from nibabel.orientations import apply_orientation

        data = np.asarray(pixels).transpose(2, 1, 0)
        if self._flip:
            data = data[::-1, ::-1, :]
        inverse = np.zeros_like(self._ornt)
        for axis, (target, sign) in enumerate(self._ornt):
            inverse[int(target)] = [axis, sign]
        return np.ascontiguousarray(apply_orientation(data, inverse))


def nifti_volume_grid(image):
    """The :class:`VolumeGrid` the NIfTI reader uses for a nibabel image: radiological axial
    slices unless the volume is oblique or a single non-axial slice (kept as stored).

    Returns:
        tuple[VolumeGrid, str]: the grid and :func:`volume_plane` of the image's affine.
    """
    shape = tuple(image.shape[:3]) + (1,) * (3 - len(image.shape[:3]))
    plane = volume_plane(image.affine)
    as_stored = plane == "oblique" or (plane != "axial" and shape[2] == 1)
    return VolumeGrid(image.affine, shape, radiological=not as_stored), plane


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


def series_affine(headers):
    """The affine of a DICOM series as a volume, or None when its slices do not form one.

    Args:
        headers (list[pydicom.Dataset]): the slices in order along their normal.

    Returns:
        np.ndarray or None: (column j, row i, slice k, 1) of the stored pixels -> RAS+ mm;
        None for fewer than two slices, a header without position, orientation or spacing,
        or gaps between slices that differ by more than 2%.
    """
    stored = [_stored_affine(ds) for ds in headers]
    if len(stored) < 2 or any(a is None for a in stored):
        return None
    origins = np.array([a[:3, 3] for a in stored])
    step = (origins[-1] - origins[0]) / (len(origins) - 1)
    gap = np.linalg.norm(step)
    if gap < 1e-4 or np.abs(np.diff(origins, axis=0) - step).max() > _EVEN_GAPS * gap:
        return None
    affine = stored[0].copy()
    affine[:3, 2] = step
    return _LPS_TO_RAS @ affine


def dicom_source_files(scan):
    """The DICOM file of each stored slice of a DICOM scan, in scan order, or None.

    None for NIfTI and image scans and for multi-frame files (one file, several slices).
    """
    names = scan.source_slices or scan.slice_names
    if scan.source.lower().endswith(NIFTI_EXTENSIONS) or any(
        name.lower().endswith(IMAGE_EXTENSIONS) for name in names
    ):
        return None
    if os.path.isdir(scan.source):
        files = [os.path.join(scan.source, name) for name in names]
    elif scan.num_slices == 1:
        files = [scan.source]
    else:
        return None
    return files if all(os.path.isfile(f) for f in files) else None


def non_axial_input(scan):
    """What keeps a scan's slices from being axial, in words, or None when they are axial
    (as read, brought to the radiological view, or resampled from a coronal or sagittal
    volume; also when the input does not say).

    Args:
        scan (Scan): from :func:`ct_lesion_d2.data.readers.read_scan`.

    Returns:
        str or None: e.g. "a single coronal slice", "an oblique series (direction cosines not
        along the patient axes)".
    """
    if scan.orientation == "axial":
        return None
    plane = scan.stored_orientation or "non-axial"
    if scan.num_slices == 1:
        kind = "slice"
    elif scan.source.lower().endswith(NIFTI_EXTENSIONS):
        kind = "volume"
    else:
        kind = "series" if os.path.isdir(scan.source) else "multi-frame file"
    if plane == "oblique":
        single = "a single " if kind == "slice" else "an "
        return f"{single}oblique {kind} (direction cosines not along the patient axes)"
    if kind == "slice":
        return f"a single {plane} slice"
    if kind == "series":
        return f"a {plane} series whose slices do not form an evenly spaced volume"
    return f"a {plane} {kind}, not resampled"


def resampled_note(scan, stored_slices):
    """The report's note on a scan resampled to axial slices (``scan.resampled_from``)."""
    kind = "volume" if scan.source.lower().endswith(NIFTI_EXTENSIONS) else "series"
    row, col = scan.spacing_mm
    return (
        f"{scan.resampled_from} {kind} of {stored_slices} slices resampled to "
        f"{scan.num_slices} axial slices by reordering its voxels (no interpolation): pixel "
        f"spacing {row:g} x {col:g} mm and slice spacing {scan.slice_thickness_mm:g} mm, from "
        f"the volume's spacing"
    )


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
        import nibabel as nib

        image = nib.load(scan.source)
        grid, _ = nifti_volume_grid(image)
        # with both codes 0 the header states no orientation; nibabel's affine is then a guess
        known = int(image.header["sform_code"]) > 0 or int(image.header["qform_code"]) > 0
        return ScanGeometry(grid.affine, known, "the input NIfTI's affine")
    files = dicom_source_files(scan)
    if files is not None:
        return _dicom_geometry(scan, files)
    return _spacing_only(
        scan,
        "none in the input (image files): identity affine with the pixel spacing if known "
        "(1 mm otherwise); no position or orientation",
    )


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
    description = "the DICOM series' ImagePositionPatient, ImageOrientationPatient, PixelSpacing"
    rows, cols = int(headers[0].Rows), int(headers[0].Columns)
    if scan.resampled_from is not None:
        grid = VolumeGrid(series_affine(headers), (cols, rows, len(headers)))
        description += f" (a {scan.resampled_from} series resampled to axial slices)"
        return ScanGeometry(grid.affine, True, description, files)
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
    return ScanGeometry(_LPS_TO_RAS @ affine, True, description, files)


def stored_to_scan_index(scan_affine, ds, shape=None):
    """For each stored pixel of a DICOM slice, the (slice, row, column) of ``scan.pixels``
    it became (one slice for an axial series; one row or column of every slice for a
    resampled coronal or sagittal one).

    Args:
        scan_affine (np.ndarray): :attr:`ScanGeometry.affine` of the scan.
        ds (pydicom.Dataset): the slice's header (with position, orientation and spacing).
        shape (tuple[int, int, int] or None): the scan's (S, H, W), to check the bounds.

    Returns:
        tuple[np.ndarray, np.ndarray, np.ndarray]: (Rows, Columns) slice, row and column
        indices into the scan's grid.

    Raises:
        ValueError: the slice does not lie on the scan's grid.
    """
    stored = _LPS_TO_RAS @ _stored_affine(ds)
    index = np.linalg.inv(scan_affine) @ stored  # (j, i, 0, 1) -> (c, r, s, 1)
    rows, cols = int(ds.Rows), int(ds.Columns)
    i, j = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    points = np.stack([j.ravel(), i.ravel(), np.zeros(i.size), np.ones(i.size)])
    exact = (index @ points)[:3]
    grid = np.rint(exact)
    outside = shape is not None and (
        (grid < 0).any() or (grid.max(axis=1) >= np.asarray(shape)[::-1]).any()
    )
    if np.abs(grid - exact).max() > 0.05 or outside:
        raise ValueError(f"{ds.get('SOPInstanceUID')}: the slice does not lie on the scan grid")
    c, r, s = (g.reshape(rows, cols).astype(int) for g in grid)
    return s, r, c
