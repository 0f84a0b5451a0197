"""DICOM files and series as a :class:`Scan` in Hounsfield units (see ``scan.py``)."""

import os
import warnings

import numpy as np

from ..io import DatasetFormatError
from .geometry import (
    VolumeGrid,
    axial_slice_transform,
    resampled_note,
    series_affine,
    slice_normal,
    slice_plane,
    volume_plane,
)
from .scan import PADDING_BELOW_HU, PADDING_HU, Scan, _folder_files

__all__ = ["list_dicom_series", "read_dicom_file", "read_dicom_series"]

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


def _hounsfield(ds, stored, path):
    """HU (float32) from the stored values: pydicom's modality LUT (``apply_modality_lut``)
    where the header has a Modality LUT Sequence or both rescale values; otherwise the rules of
    :func:`_rescale` (an enhanced CT's functional groups, a missing slope or intercept)."""
    from pydicom.pixels import apply_modality_lut

    if ds.get("ModalityLUTSequence") or (
        ds.get("RescaleSlope") is not None and ds.get("RescaleIntercept") is not None
    ):
        return apply_modality_lut(stored, ds).astype(np.float32)
    slope, intercept = _rescale(ds, path)
    return stored.astype(np.float32) * np.float32(slope) + np.float32(intercept)


def _rescale(ds, path):
    """(slope, intercept) when the header lacks one of them; refuses data that cannot be
    Hounsfield units."""
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


def _stored_slices_unchecked(ds, path):
    """HU pixels (F, H, W), padding mask and pixel spacing of one DICOM file, as stored."""
    stored = _decode_pixels(ds, path)
    hu = _hounsfield(ds, stored, path)
    padding = _padding_mask(ds, stored, hu)
    hu[padding] = PADDING_HU
    spacing = ds.get("PixelSpacing")
    spacing = (float(spacing[0]), float(spacing[1])) if spacing is not None else None
    return hu, padding, spacing


def _read_slices_unchecked(ds, path, warn=True):
    """HU pixels (F, H, W), padding mask, pixel spacing and orientation ("axial" or "as
    stored") of one DICOM file, axial slices in the radiological view."""
    hu, padding, spacing = _stored_slices_unchecked(ds, path)
    transform = axial_slice_transform(ds.get("ImageOrientationPatient"))
    if transform is None:
        if warn:
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
        normal = slice_normal(ds.get("ImageOrientationPatient"))
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


def _read_slices(ds, path, warn=True):
    return _checked(_read_slices_unchecked, ds, path, path, warn)


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
        stored_orientation=_checked(_plane, ds, path),
    )


def _plane(ds):
    return slice_plane(ds.get("ImageOrientationPatient"))


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
    plane = _checked(_plane, first, paths[0])
    affine = None
    if plane in ("coronal", "sagittal") and positions is not None:
        affine = _checked(lambda _: series_affine(headers), first, paths[0])
        affine = affine if affine is not None and volume_plane(affine) == plane else None
    if affine is not None:
        return _resampled_series(folder, paths, first, affine, plane)
    if plane not in (None, "axial"):
        warnings.warn(f"{folder}: slices are not axis-aligned axial ({plane}); kept as stored")
    slices, masks, spacing, orientation = [], [], None, "axial"
    for path in paths:
        ds = _dcmread(path)
        hu, padding, spacing_i, orientation = _read_slices(ds, path, warn=False)
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
        stored_orientation=plane,
    )


def _resampled_series(folder, paths, first, affine, plane):
    """A coronal or sagittal series of evenly spaced slices as axial slices (:class:`VolumeGrid`
    of the series' volume, voxels reordered, spacing kept)."""
    slices, masks = [], []
    for path in paths:
        hu, padding, _ = _checked(_stored_slices_unchecked, _dcmread(path), path, path)
        if len(hu) != 1:
            raise DatasetFormatError(path, f"multi-frame file ({len(hu)} frames) inside a series")
        slices.append(hu[0])
        masks.append(padding[0])
    # volume[j, i, k]: column j, row i of stored slice k, as series_affine indexes it
    volume, padding = np.stack(slices).transpose(2, 1, 0), np.stack(masks).transpose(2, 1, 0)
    grid = VolumeGrid(affine, volume.shape)
    pixels = grid.to_scan(volume)
    scan = Scan(
        pixels=pixels,
        is_hu=True,
        spacing_mm=grid.spacing_mm,
        slice_thickness_mm=grid.slice_spacing_mm,
        slice_names=[f"axial[{k}]" for k in range(len(pixels))],
        source=str(folder),
        series_uid=first.get("SeriesInstanceUID"),
        positions_mm=grid.positions_mm,
        padding_mask=grid.to_scan(padding),
        modality=first.get("Modality"),
        stored_orientation=plane,
        resampled_from=plane,
        source_slices=[os.path.basename(p) for p in paths],
    )
    scan.notes.append(resampled_note(scan, len(paths)))
    return scan
