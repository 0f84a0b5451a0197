"""Reading a patient's scan: DICOM files and series, NIfTI volumes and PNG/JPG slices.

Every reader returns a :class:`Scan`, a stack of axial slices with what is known about its
geometry. DICOM and NIfTI pixels are Hounsfield units (``is_hu``); PNG/JPG slices are taken as
8-bit images to which a window was already applied (the form of the public lesion datasets).

Orientation: axis-aligned axial slices are turned into the radiological view (rows from
anterior to posterior, columns from the patient's right to left, slices from inferior to
superior), whatever order the file stored them in. Oblique and non-axial slices are kept as
stored, with a warning.

Padding: voxels outside the scanner's field of view (DICOM ``PixelPaddingValue`` and
``PixelPaddingRangeLimit``; without those tags, and in NIfTI, any value below
``PADDING_BELOW_HU``, which neither tissue nor air reaches; NaN or infinite NIfTI voxels) are
set to ``PADDING_HU`` and flagged in ``Scan.padding_mask``. ``PADDING_HU`` lies below every
useful window, so padding becomes black after windowing, as it is in the 8-bit datasets.

All failures raise :class:`DatasetFormatError` whose message names the offending file.
"""

import os
import re
import warnings
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np

from .io import IMAGE_EXTENSIONS, DatasetFormatError, read_grey_image

__all__ = [
    "PADDING_BELOW_HU",
    "PADDING_HU",
    "Scan",
    "folder_kind",
    "list_dicom_series",
    "list_image_files",
    "read_dicom_file",
    "read_dicom_series",
    "read_image_slices",
    "read_nifti",
    "read_scan",
    "write_nifti",
]


# Value given to voxels outside the field of view (GE's -3024, below any window).
PADDING_HU = -3024.0
# Without a padding tag, HU values below this are padding: the CT scale starts at -1024.
PADDING_BELOW_HU = -1500.0

NIFTI_EXTENSIONS = (".nii", ".nii.gz")
# Files a DICOM folder may hold besides the slices.
_IGNORED_FILES = ("DICOMDIR", "Thumbs.db")

# Decoder packages of the compressed transfer syntaxes, for the error message.
_DECODERS = {
    "JPEG Baseline": "pylibjpeg and pylibjpeg-libjpeg (or python-gdcm)",
    "JPEG Extended": "pylibjpeg and pylibjpeg-libjpeg (or python-gdcm)",
    "JPEG Lossless": "pylibjpeg and pylibjpeg-libjpeg (or python-gdcm)",
    "JPEG-LS": "pyjpegls (or pylibjpeg-libjpeg, or python-gdcm)",
    "JPEG 2000": "pylibjpeg and pylibjpeg-openjpeg (or python-gdcm)",
    "RLE": "numpy (built into pydicom) or pylibjpeg-rle",
    "Deflated": "zlib (built into Python)",
}


@dataclass
class Scan:
    """A stack of slices of one scan.

    Attributes:
        pixels (np.ndarray): (S, H, W) float32; HU when ``is_hu``, else 0-255 windowed grey.
        is_hu (bool): True for DICOM/NIfTI in Hounsfield units, False for 8-bit PNG/JPG slices.
        spacing_mm (tuple[float, float] or None): (row, column) pixel spacing, if known.
        slice_thickness_mm (float or None): nominal slice thickness, if known.
        slice_names (list[str]): one name per slice (file name, or volume name and index).
        source (str): the path that was read.
        series_uid (str or None): DICOM SeriesInstanceUID.
        positions_mm (list[float] or None): slice positions along the slice normal.
        padding_mask (np.ndarray or None): (S, H, W) bool, True outside the field of view.
        orientation (str): "axial" (radiological view) or "as stored" (not axis-aligned axial).
        modality (str or None): DICOM Modality, when given.
        notes (list[str]): what the reader did to the pixels beyond reading them (a stated
            intensity convention, a downscale ...), for the report.
    """

    pixels: np.ndarray
    is_hu: bool
    spacing_mm: Optional[Tuple[float, float]]
    slice_thickness_mm: Optional[float]
    slice_names: List[str]
    source: str
    series_uid: Optional[str] = None
    positions_mm: Optional[List[float]] = None
    padding_mask: Optional[np.ndarray] = None
    orientation: str = "axial"
    modality: Optional[str] = None
    notes: List[str] = field(default_factory=list)

    def __post_init__(self):
        self.pixels = np.asarray(self.pixels, dtype=np.float32)
        if self.pixels.ndim != 3:
            raise ValueError(f"Scan pixels must be (S, H, W); got shape {self.pixels.shape}")
        if len(self.slice_names) != len(self.pixels):
            raise ValueError(
                f"{len(self.slice_names)} slice names for {len(self.pixels)} slices ({self.source})"
            )

    @property
    def num_slices(self):
        return int(self.pixels.shape[0])

    @property
    def image_size(self):
        """tuple[int, int]: (height, width) of every slice."""
        return tuple(int(v) for v in self.pixels.shape[1:])

    @property
    def pixel_area_mm2(self):
        """float or None: area of one pixel, when the spacing is known."""
        if self.spacing_mm is None:
            return None
        return float(self.spacing_mm[0] * self.spacing_mm[1])


# ---------------------------------------------------------------------------------------------
# DICOM


def _pydicom():
    import pydicom

    return pydicom


def _dcmread(path, stop_before_pixels=False):
    """``pydicom.dcmread`` with errors that name the file."""
    pydicom = _pydicom()
    if not os.path.isfile(path):
        raise DatasetFormatError(path, "file not found")
    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except pydicom.errors.InvalidDicomError:
        raise DatasetFormatError(path, "not a DICOM file (no 'DICM' marker after the preamble)")
    except Exception as e:  # truncated headers surface as EOFError, struct.error, OSError ...
        raise DatasetFormatError(path, f"cannot parse DICOM header ({type(e).__name__}: {e})")


def _decode_pixels(ds, path):
    """Stored pixel values as an (F, H, W) array; errors name the file and the missing decoder."""
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise DatasetFormatError(path, "DICOM file has no pixel data (no PixelData element)")
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    try:
        arr = ds.pixel_array
    except Exception as e:
        name = syntax.name if syntax is not None else "unknown transfer syntax"
        if syntax is not None and syntax.is_compressed:
            packages = next(
                (p for k, p in _DECODERS.items() if k in name), "a pydicom pixel plugin"
            )
            raise DatasetFormatError(
                path,
                f"cannot decode compressed pixel data ({name}, {syntax}): install {packages}; "
                f"pydicom said: {e}",
            )
        raise DatasetFormatError(
            path, f"cannot read pixel data ({name}): truncated or corrupt? ({e})"
        )
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples != 1:
        raise DatasetFormatError(
            path,
            f"{samples} samples per pixel ({ds.get('PhotometricInterpretation')}): a colour "
            "image (screen capture?), not a CT slice in Hounsfield units",
        )
    return arr.reshape((frames,) + arr.shape[-2:])


def _rescale(ds, path):
    """(slope, intercept) of the modality LUT; refuses data that cannot be Hounsfield units."""
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is None and intercept is None:
        shared = ds.get("SharedFunctionalGroupsSequence")
        transform = shared[0].get("PixelValueTransformationSequence") if shared else None
        if transform:
            slope, intercept = (
                transform[0].get("RescaleSlope"),
                transform[0].get("RescaleIntercept"),
            )
    if slope is None and intercept is None:
        modality = ds.get("Modality")
        if modality != "CT":
            raise DatasetFormatError(
                path,
                f"no RescaleSlope/RescaleIntercept and Modality is {modality!r}: the pixel "
                "values cannot be read as Hounsfield units",
            )
        return 1.0, 0.0
    return float(slope if slope is not None else 1.0), float(intercept or 0.0)


def _padding_mask(ds, stored, hu):
    """True where a voxel is outside the field of view (see the module docstring)."""
    value = ds.get("PixelPaddingValue")
    if value is None:
        return hu < PADDING_BELOW_HU
    limit = ds.get("PixelPaddingRangeLimit")
    if limit is None:
        return stored == value
    lo, hi = sorted((int(value), int(limit)))
    return (stored >= lo) & (stored <= hi)


def _axial_transform(orientation):
    """How to bring an axis-aligned axial slice to the radiological view.

    Args:
        orientation (Sequence[float] or None): ImageOrientationPatient (row, column cosines).

    Returns:
        tuple or None: (transpose, flip_rows, flip_columns), or None if not axis-aligned axial.
    """
    if orientation is None:
        return (False, False, False)
    cosines = np.asarray([float(v) for v in orientation]).reshape(2, 3)
    axes = np.abs(cosines).argmax(axis=1)
    if (np.abs(cosines).max(axis=1) < 0.99).any() or sorted(axes.tolist()) != [0, 1]:
        return None
    transpose = bool(axes[0] == 1)
    row_cos, col_cos = (cosines[1], cosines[0]) if transpose else (cosines[0], cosines[1])
    # after the transpose, columns must run along +x (patient left), rows along +y (posterior)
    return transpose, bool(col_cos[1] < 0), bool(row_cos[0] < 0)


def _slice_normal(orientation):
    if orientation is None:
        return np.array([0.0, 0.0, 1.0])
    cosines = np.asarray([float(v) for v in orientation]).reshape(2, 3)
    return np.cross(cosines[0], cosines[1])


def _read_slices_unchecked(ds, path):
    """HU pixels (F, H, W), padding mask and pixel spacing of one DICOM file, radiological view."""
    stored = _decode_pixels(ds, path)
    slope, intercept = _rescale(ds, path)
    hu = stored.astype(np.float32) * np.float32(slope) + np.float32(intercept)
    padding = _padding_mask(ds, stored, hu)
    hu[padding] = PADDING_HU
    spacing = ds.get("PixelSpacing")
    spacing = (float(spacing[0]), float(spacing[1])) if spacing is not None else None
    transform = _axial_transform(ds.get("ImageOrientationPatient"))
    if transform is None:
        warnings.warn(f"{path}: slice is not axis-aligned axial; kept as stored")
        return hu, padding, spacing, "as stored"
    transpose, flip_rows, flip_columns = transform
    if transpose:
        hu, padding = hu.transpose(0, 2, 1), padding.transpose(0, 2, 1)
        spacing = spacing[::-1] if spacing is not None else None
    if flip_rows:
        hu, padding = hu[:, ::-1], padding[:, ::-1]
    if flip_columns:
        hu, padding = hu[:, :, ::-1], padding[:, :, ::-1]
    return np.ascontiguousarray(hu), np.ascontiguousarray(padding), spacing, "axial"


def _position_unchecked(ds):
    """Position along the slice normal (mm), or None when the header has no geometry."""
    position = ds.get("ImagePositionPatient")
    if position is not None:
        normal = _slice_normal(ds.get("ImageOrientationPatient"))
        return float(np.dot(normal, [float(v) for v in position]))
    location = ds.get("SliceLocation")
    return float(location) if location is not None else None


def _checked(function, ds, path, *args):
    """Run a header interpretation; malformed values (a PixelSpacing of one number, an
    orientation of five ...) become a DatasetFormatError naming the file."""
    try:
        return function(ds, *args)
    except DatasetFormatError:
        raise
    except (ValueError, TypeError, IndexError, AttributeError) as e:
        raise DatasetFormatError(path, f"malformed DICOM header value ({type(e).__name__}: {e})")


def _read_slices(ds, path):
    return _checked(_read_slices_unchecked, ds, path, path)


def _position(ds, path):
    return _checked(_position_unchecked, ds, path)


def _same_orientation(ds, reference):
    a, b = ds.get("ImageOrientationPatient"), reference.get("ImageOrientationPatient")
    if a is None or b is None:
        return a is None and b is None
    a, b = [float(v) for v in a], [float(v) for v in b]
    return len(a) == len(b) and np.allclose(a, b, atol=1e-3)


def _float_or_none(value):
    return float(value) if value not in (None, "") else None


def read_dicom_file(path):
    """Read one DICOM file (one slice, or the frames of a multi-frame file, in stored order).

    Args:
        path (str): the file.

    Returns:
        Scan: pixels in HU.

    Raises:
        DatasetFormatError: not DICOM, truncated, no pixel data, an undecodable compressed
            transfer syntax (the message names the package), or values that are not HU.
    """
    ds = _dcmread(path)
    hu, padding, spacing, orientation = _read_slices(ds, path)
    name = os.path.basename(path)
    names = [name] if len(hu) == 1 else [f"{name}#frame{i}" for i in range(len(hu))]
    position = _position(ds, path)
    return Scan(
        pixels=hu,
        is_hu=True,
        spacing_mm=spacing,
        slice_thickness_mm=_float_or_none(ds.get("SliceThickness")),
        slice_names=names,
        source=str(path),
        series_uid=ds.get("SeriesInstanceUID"),
        positions_mm=[position] if position is not None and len(hu) == 1 else None,
        padding_mask=padding,
        orientation=orientation,
        modality=ds.get("Modality"),
    )


def _folder_files(folder):
    if not os.path.isdir(folder):
        raise DatasetFormatError(folder, "folder not found")
    names = sorted(
        n
        for n in os.listdir(folder)
        if not n.startswith(".")
        and n not in _IGNORED_FILES
        and os.path.isfile(os.path.join(folder, n))
    )
    return [os.path.join(folder, n) for n in names]


def list_dicom_series(folder):
    """Group the DICOM files of a folder by SeriesInstanceUID (headers only).

    Args:
        folder (str): a folder of DICOM files (hidden files and DICOMDIR are skipped).

    Returns:
        dict[str, list[str]]: series UID -> file paths ("" for files without a UID).

    Raises:
        DatasetFormatError: the folder is missing or empty, or one of its files is not DICOM.
    """
    files = _folder_files(folder)
    if not files:
        raise DatasetFormatError(folder, "folder holds no files")
    series = {}
    for path in files:
        ds = _dcmread(path, stop_before_pixels=True)
        series.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append(path)
    return series


def _choose_series(folder, series, series_uid):
    if series_uid is not None:
        if series_uid not in series:
            raise DatasetFormatError(
                folder, f"no series {series_uid!r}; the folder holds {sorted(series)}"
            )
        return series[series_uid]
    if len(series) > 1:
        listing = "; ".join(
            f"{uid or '<no SeriesInstanceUID>'} ({len(paths)} files, e.g. "
            f"{os.path.basename(paths[0])})"
            for uid, paths in sorted(series.items())
        )
        raise DatasetFormatError(
            folder,
            f"folder mixes {len(series)} DICOM series: {listing}. Choose one with "
            "series_uid (predict.py --series-uid) or read them one by one (--all-series)",
        )
    return next(iter(series.values()))


def _order_slices(paths, headers):
    """Paths and headers sorted by position along the normal (inferior to superior).

    Falls back to InstanceNumber, with a warning, when the headers carry no position.
    """
    positions = [_position(ds, p) for ds, p in zip(headers, paths)]
    if all(p is not None for p in positions):
        order = np.argsort(positions, kind="stable")
        sorted_positions = [positions[i] for i in order]
        for a, b in zip(order[:-1], order[1:]):
            if abs(positions[a] - positions[b]) < 1e-4:
                raise DatasetFormatError(
                    paths[b],
                    f"same slice position {positions[b]:.3f} mm as {paths[a]}: "
                    "duplicate slice or two series in one folder",
                )
        return [paths[i] for i in order], [headers[i] for i in order], sorted_positions
    numbers = [ds.get("InstanceNumber") for ds in headers]
    if any(n is None for n in numbers):
        missing = paths[[i for i, p in enumerate(positions) if p is None][0]]
        raise DatasetFormatError(
            missing,
            "no ImagePositionPatient, SliceLocation or InstanceNumber: cannot order "
            "the slices of the series",
        )
    warnings.warn(f"{os.path.dirname(paths[0])}: no slice positions; ordered by InstanceNumber")
    order = np.argsort([int(n) for n in numbers], kind="stable")
    return [paths[i] for i in order], [headers[i] for i in order], None


def read_dicom_series(folder, series_uid=None):
    """Read a folder of DICOM slices as one scan, slices sorted along the patient axis.

    The order comes from ImagePositionPatient projected on the slice normal (inferior to
    superior), never from file names. A folder with several series is refused unless
    ``series_uid`` picks one.

    Args:
        folder (str): the folder (not searched recursively).
        series_uid (str or None): the SeriesInstanceUID to read.

    Returns:
        Scan: pixels in HU, ``positions_mm`` when the headers give them.

    Raises:
        DatasetFormatError: names the folder (missing, empty, mixed series) or the file (not
            DICOM, truncated, no pixels, a size or orientation differing from the series).
    """
    paths = _choose_series(folder, list_dicom_series(folder), series_uid)
    headers = [_dcmread(p, stop_before_pixels=True) for p in paths]
    paths, headers, positions = _order_slices(paths, headers)
    first = headers[0]
    for path, ds in zip(paths[1:], headers[1:]):
        for key in ("Rows", "Columns"):
            if ds.get(key) != first.get(key):
                raise DatasetFormatError(
                    path,
                    f"slice is {ds.get('Rows')}x{ds.get('Columns')} (rows x columns) but "
                    f"{os.path.basename(paths[0])} of the same series is "
                    f"{first.get('Rows')}x{first.get('Columns')}",
                )
        orientation = ds.get("ImageOrientationPatient")
        reference = first.get("ImageOrientationPatient")
        if not _checked(_same_orientation, ds, path, first):
            raise DatasetFormatError(
                path,
                f"ImageOrientationPatient {orientation} differs from {reference} of "
                f"{os.path.basename(paths[0])} in the same series",
            )
    slices, masks, spacing, orientation = [], [], None, "axial"
    for path in paths:
        ds = _dcmread(path)
        hu, padding, spacing_i, orientation = _read_slices(ds, path)
        if len(hu) != 1:
            raise DatasetFormatError(path, f"multi-frame file ({len(hu)} frames) inside a series")
        slices.append(hu[0])
        masks.append(padding[0])
        spacing = spacing if spacing is not None else spacing_i
    return Scan(
        pixels=np.stack(slices),
        is_hu=True,
        spacing_mm=spacing,
        slice_thickness_mm=_float_or_none(first.get("SliceThickness")),
        slice_names=[os.path.basename(p) for p in paths],
        source=str(folder),
        series_uid=first.get("SeriesInstanceUID"),
        positions_mm=positions,
        padding_mask=np.stack(masks),
        orientation=orientation,
        modality=first.get("Modality"),
    )


# ---------------------------------------------------------------------------------------------
# NIfTI


def read_nifti(path):
    """Read a NIfTI volume (HU) as axial slices in the radiological view.

    The volume is reoriented to the closest RAS+ axes (``nibabel.as_closest_canonical``);
    each slice along the third axis becomes ``data[::-1, ::-1, k].T`` (rows anterior to
    posterior, columns right to left), slices ordered inferior to superior. NaN and infinite
    voxels (with a warning) and values below ``PADDING_BELOW_HU`` are padding: set to
    ``PADDING_HU`` and flagged in ``padding_mask``.

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
        image = nib.as_closest_canonical(nib.load(path))
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
    zooms = [float(z) for z in image.header.get_zooms()[:3]] + [1.0] * 3
    pixels = np.ascontiguousarray(data[::-1, ::-1, :].transpose(2, 1, 0))
    padding = np.ascontiguousarray(invalid[::-1, ::-1, :].transpose(2, 1, 0))
    offset = float(image.affine[2, 3])
    name = os.path.basename(path)
    return Scan(
        pixels=pixels,
        is_hu=True,
        spacing_mm=(zooms[1], zooms[0]),
        slice_thickness_mm=zooms[2],
        slice_names=[f"{name}[{k}]" for k in range(pixels.shape[0])],
        source=str(path),
        positions_mm=[offset + k * zooms[2] for k in range(pixels.shape[0])],
        padding_mask=padding,
    )


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


# ---------------------------------------------------------------------------------------------
# PNG / JPG slices and dispatch


def _natural_key(name):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def list_image_files(folder):
    """The image slices of a folder (not searched recursively), in natural file-name order.

    Raises:
        DatasetFormatError: the folder is missing or holds no image file.
    """
    paths = [p for p in _folder_files(folder) if p.lower().endswith(IMAGE_EXTENSIONS)]
    if not paths:
        raise DatasetFormatError(folder, f"no image files ({', '.join(IMAGE_EXTENSIONS)})")
    return sorted(paths, key=lambda p: _natural_key(os.path.basename(p)))


def read_image_slices(path_or_folder, options=None):
    """Read an 8-bit slice, or a folder of them (natural file-name order), as one scan.

    With ``options`` (:class:`ct_lesion_d2.data.image_input.ImageInputOptions`), as
    ``tools/predict.py`` reads them: 16-bit and float slices refused unless their convention
    is stated, small slices refused, very large ones downscaled (``read_image_scan``).

    The images are taken as already windowed (``is_hu`` False), read grey as in training
    (``read_grey_image``: colour becomes luminance). Every slice of a folder must have the
    size of the first.

    Raises:
        DatasetFormatError: unreadable file, a folder with no images, or a size mismatch.
    """
    if os.path.isdir(path_or_folder):
        paths = list_image_files(path_or_folder)
    else:
        paths = [path_or_folder]
    if options is not None:
        from .image_input import read_image_scan

        return read_image_scan(paths, path_or_folder, options)
    slices = []
    for path in paths:
        image = read_grey_image(path)
        if slices and image.shape != slices[0].shape:
            raise DatasetFormatError(
                path,
                f"slice is {image.shape[0]}x{image.shape[1]} (height x width) but "
                f"{os.path.basename(paths[0])} is {slices[0].shape[0]}x{slices[0].shape[1]}; "
                "pass slices of different sizes one by one",
            )
        slices.append(image)
    return Scan(
        pixels=np.stack(slices).astype(np.float32),
        is_hu=False,
        spacing_mm=None,
        slice_thickness_mm=None,
        slice_names=[os.path.basename(p) for p in paths],
        source=str(path_or_folder),
    )


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
