"""Image slices (PNG/JPG/TIFF) for prediction, with their intensity convention stated.

An 8-bit slice is taken as already windowed, the form of the public lesion datasets. A 16-bit
or float slice holds numbers whose meaning the file does not say (HU, HU + 1024, raw detector
values ...): scaling it by its range, as :func:`ct_lesion_d2.data.readers.read_grey_image` does for
dataset conversion, changes the contrast the model sees. Such slices are refused unless the
convention is stated (``ImageInputOptions(units="hu", hu_offset=1024)``: values are
HU + 1024), and then read as HU and windowed like DICOM.

Size: slices smaller than ``min_side`` are refused; slices larger than ``large_side`` are
downscaled to the model's test input size with a warning, one at a time, so memory stays
bounded by one decoded slice. What was done is listed in ``Scan.notes``.
"""

import os
import warnings
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
from PIL import Image

from ..io import DatasetFormatError
from .images import HIGH_BIT_DEPTH_MODES, _decode
from .scan import PADDING_BELOW_HU, PADDING_HU, Scan

__all__ = ["ImageInputOptions", "LARGE_IMAGE_SIDE", "MIN_IMAGE_SIDE", "read_image_scan"]

# Smallest side the detectors can take (the backbone's stride-32 features need one cell).
MIN_IMAGE_SIDE = 32
# Longer side above which a slice is downscaled to the model's input size when read.
LARGE_IMAGE_SIDE = 2048
UNITS = ("windowed", "hu")


@dataclass(frozen=True)
class ImageInputOptions:
    """How to read image slices.

    Attributes:
        units (str): "windowed" (8-bit slices, already windowed; 16-bit and float refused) or
            "hu" (16-bit or float slices holding HU + ``hu_offset``; 8-bit refused).
        hu_offset (float or None): subtracted from the stored values to give HU.
        min_side (int): smaller slices are refused.
        large_side (int): slices with a longer side above it are downscaled to ``model_size``.
        model_size (tuple[int, int] or None): the model's (``INPUT.MIN_SIZE_TEST``,
            ``INPUT.MAX_SIZE_TEST``); None = never downscale.
    """

    units: str = "windowed"
    hu_offset: Optional[float] = None
    min_side: int = MIN_IMAGE_SIDE
    large_side: int = LARGE_IMAGE_SIDE
    model_size: Optional[Tuple[int, int]] = None

    def __post_init__(self):
        if self.units not in UNITS:
            raise ValueError(f"units must be one of {UNITS}; got {self.units!r}")

    def describe(self, mode):
        """The conversion applied to a slice of PIL ``mode``, in words."""
        if self.units == "hu":
            return (
                f"{_depth(mode)} values read as HU + {self.hu_offset or 0:g} "
                f"(--input-units hu --hu-offset {self.hu_offset or 0:g}), then windowed as DICOM"
            )
        return "8-bit grey taken as already windowed (lung window), as in the training datasets"


class _Refused(Exception):
    """Carries a DatasetFormatError out of ``_decode``, which rewraps ValueErrors."""


def _depth(mode):
    return "float" if mode == "F" else ("32-bit" if mode == "I" else "16-bit")


def _pil_mode(img):
    """The PIL mode, with Pillow 9's "I" for 16-bit PNGs (PNG has no 32-bit grey) as I;16."""
    return "I;16" if img.mode == "I" and img.format == "PNG" else img.mode


def _refusal(mode, options):
    """The problem with reading a slice of ``mode`` under ``options``, or None."""
    high = mode in HIGH_BIT_DEPTH_MODES
    if high and options.units != "hu":
        return (
            f"{_depth(mode)} image (PIL mode {mode}): the file does not say what its values "
            "mean, and scaling them by their range would change the contrast. State it, e.g. "
            "--input-units hu --hu-offset 1024 for values that are HU + 1024, or give the "
            "DICOM or NIfTI export instead"
        )
    if not high and options.units == "hu":
        return (
            f"8-bit image (PIL mode {mode}) cannot hold Hounsfield units; without "
            "--input-units hu it is read as an already windowed slice"
        )
    if mode.startswith("I;16") and not options.hu_offset:
        return (
            f"unsigned 16-bit image (PIL mode {mode}) cannot hold negative HU as they are: "
            "give the offset its exporter added, e.g. --hu-offset 1024"
        )
    return None


def _target_size(height, width, model_size):
    """``ResizeShortestEdge``'s output size for the model's test sizes."""
    short, longest = model_size
    scale = short / min(height, width)
    if max(height, width) * scale > longest:
        scale = longest / max(height, width)
    return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


def _read_slice(path, options, notes):
    """(pixels float32, is_hu, PIL mode) of one slice, refused or downscaled per ``options``."""

    def to_array(img):
        mode = _pil_mode(img)
        problem = _refusal(mode, options)
        if problem:
            raise _Refused(DatasetFormatError(path, problem))
        height, width = img.height, img.width
        if min(height, width) < options.min_side:
            raise _Refused(
                DatasetFormatError(
                    path,
                    f"image is {height}x{width} pixels (height x width); slices need at least "
                    f"{options.min_side} pixels a side",
                )
            )
        if img.mode in HIGH_BIT_DEPTH_MODES:
            pixels = np.asarray(img, dtype=np.float32) - np.float32(options.hu_offset or 0.0)
            img = Image.fromarray(pixels, mode="F")
        else:
            img = img.convert("L")
        if options.model_size and max(height, width) > options.large_side:
            new_h, new_w = _target_size(height, width, options.model_size)
            message = (
                f"{os.path.basename(path)}: {height}x{width} image downscaled to {new_h}x{new_w} "
                f"(the model's input size; larger than {options.large_side} px): lesion masks "
                "and areas are at that size"
            )
            warnings.warn(message)
            notes.append(message)
            img = img.resize((new_w, new_h), Image.BILINEAR)
        return np.asarray(img, dtype=np.float32), options.units == "hu", mode

    try:
        return _decode(path, "image", to_array)
    except _Refused as e:
        raise e.args[0] from None


def read_image_scan(paths, source, options=None):
    """Read image slices as one :class:`~ct_lesion_d2.data.readers.Scan` under ``options``.

    Args:
        paths (list[str]): the slice files, in scan order.
        source (str): the file or folder given (the scan's ``source``).
        options (ImageInputOptions or None): None = ``ImageInputOptions()`` (8-bit only).

    Returns:
        Scan: 0-255 windowed grey, or HU (``is_hu``) for ``units="hu"``, with ``notes``.

    Raises:
        DatasetFormatError: unreadable, refused (message says how to state the convention),
            too small, or a size differing from the first slice.
    """
    options = options or ImageInputOptions()
    notes, slices, modes = [], [], set()
    for path in paths:
        pixels, is_hu, mode = _read_slice(path, options, notes)
        if slices and pixels.shape != slices[0].shape:
            raise DatasetFormatError(
                path,
                f"slice is {pixels.shape[0]}x{pixels.shape[1]} (height x width) but "
                f"{os.path.basename(paths[0])} is {slices[0].shape[0]}x{slices[0].shape[1]}; "
                "pass slices of different sizes one by one",
            )
        slices.append(pixels)
        modes.add(mode)
    pixels = np.stack(slices)
    padding = None
    if options.units == "hu":
        padding = pixels < PADDING_BELOW_HU
        pixels[padding] = PADDING_HU
    notes.insert(0, options.describe(sorted(modes)[0]))
    return Scan(
        pixels=pixels,
        is_hu=options.units == "hu",
        spacing_mm=None,
        slice_thickness_mm=None,
        slice_names=[os.path.basename(p) for p in paths],
        source=str(source),
        padding_mask=padding,
        notes=notes,
    )
