"""Image slices (PNG, JPG and the other formats PIL decodes) and label masks, with errors that
name the file and the problem; folders of 8-bit slices as a :class:`Scan`."""

import os
import re

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..io import DatasetFormatError
from .scan import Scan, _folder_files

__all__ = [
    "BINARY",
    "IMAGE_EXTENSIONS",
    "is_high_bit_depth",
    "list_image_files",
    "read_binary_mask",
    "read_grey_image",
    "read_image_slices",
    "read_label_mask",
    "read_mask",
    "verify_jpeg",
]

# File extensions read as image slices (PNG/JPG and the other formats PIL decodes).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def _decode(path, kind, to_array):
    """Open ``path`` with PIL and return ``to_array(image)``; errors name the file.

    Args:
        kind (str): "image" or "mask", for the messages.
        to_array (callable): PIL image -> np.ndarray, run while the file is open.
    """
    try:
        with Image.open(path) as img:
            img.load()
            return to_array(img)
    except FileNotFoundError:
        missing = "file not found" if kind == "image" else f"{kind} file not found"
        raise DatasetFormatError(path, missing) from None
    except (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
    ) as e:
        if isinstance(e, OSError) and os.path.isfile(path) and os.path.getsize(path) == 0:
            raise DatasetFormatError(path, f"cannot read {kind} (empty file, 0 bytes)") from None
        raise DatasetFormatError(path, f"cannot read {kind} ({e})") from None


# PIL modes of more than 8 bits per pixel, which Detectron2's read_image clips to 0-255.
HIGH_BIT_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I", "F")


def _grey_uint8(img):
    if img.mode in HIGH_BIT_DEPTH_MODES:
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        return ((arr - lo) * scale).round().astype(np.uint8)
    return np.asarray(img.convert("L"))


def read_grey_image(path, strict=False):
    """Read a slice as a 2-D uint8 array (grey, RGB, RGBA, 8 or 16 bit).

    Colour images are converted to luminance; 16-bit images are scaled to 0-255 by their range.

    Args:
        strict (bool): also decode JPEG files with a second, strict decoder (``libjpeg``), which
            rejects corrupt entropy-coded data that PIL decodes into garbage without an error.

    Raises:
        DatasetFormatError: if the file is missing or cannot be decoded.
    """
    image = _decode(path, "image", _grey_uint8)
    if strict:
        verify_jpeg(path)
    return image


def verify_jpeg(path):
    """Raise ``DatasetFormatError`` if ``path`` is a JPEG file whose data is corrupt.

    PIL (libjpeg-turbo) only warns on corrupt scan data and returns a damaged image;
    pylibjpeg's ``libjpeg`` stops on it. Files that are not JPEG are ignored, and so is
    everything when ``libjpeg`` is not installed.
    """
    try:
        import libjpeg
    except ImportError:
        return
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] != b"\xff\xd8":
        return
    try:
        libjpeg.decode(data)
    except Exception as e:  # libjpeg raises RuntimeError, or ValueError on odd headers
        raise DatasetFormatError(path, f"corrupt JPEG data ({e})") from None


def is_high_bit_depth(path):
    """Whether the image file holds more than 8 bits per pixel (e.g. a 16-bit PNG)."""
    try:
        with Image.open(path) as img:
            return img.mode in HIGH_BIT_DEPTH_MODES
    except (OSError, ValueError, SyntaxError):
        return False


def _label_array(img):
    # Grey + alpha (LA, PA): the labels are the first channel; the alpha channel is not a label.
    if img.mode in ("LA", "La", "PA"):
        return np.asarray(img)[..., 0]
    return np.asarray(img)


def read_label_mask(path, allowed_values):
    """Read an integer label mask and check its values.

    Args:
        path (str): PNG with one label per pixel (mode L or P, or grey stored as RGB).
        allowed_values (Iterable[int]): the labels the layout declares.

    Returns:
        np.ndarray: 2-D uint8 array of labels.

    Raises:
        DatasetFormatError: unreadable file, colour mask, or a value outside ``allowed_values``.
    """
    arr = _decode(path, "mask", _label_array)
    if arr.ndim == 3:
        if not (arr[..., :3] == arr[..., :1]).all():
            raise DatasetFormatError(path, "mask has colour channels that differ; expected labels")
        arr = arr[..., 0]
    unexpected = sorted(set(np.unique(arr).tolist()) - set(int(v) for v in allowed_values))
    if unexpected:
        raise DatasetFormatError(
            path, f"unexpected mask values {unexpected}; allowed {sorted(allowed_values)}"
        )
    return arr.astype(np.uint8)


# Mask-value declaration of binary layouts: 0 and one foreground value, 1 or 255.
BINARY = "binary"
BINARY_FOREGROUND = (1, 255)


def read_binary_mask(path):
    """Read a two-valued mask, 0/1 or 0/255 (the two conventions of public lesion masks), as
    0/1 labels.

    Raises:
        DatasetFormatError: unreadable file, colour mask, or values other than 0 and one of
            ``BINARY_FOREGROUND``.
    """
    arr = _decode(path, "mask", _label_array)
    if arr.ndim == 3:
        if not (arr[..., :3] == arr[..., :1]).all():
            raise DatasetFormatError(path, "mask has colour channels that differ; expected labels")
        arr = arr[..., 0]
    values = set(np.unique(arr).tolist())
    if not any(values <= {0, v} for v in BINARY_FOREGROUND):
        foreground = 255 if 255 in values and 1 not in values else 1
        unexpected = sorted(values - {0, foreground})
        raise DatasetFormatError(
            path, f"unexpected mask values {unexpected}; allowed 0 and 1, or 0 and 255"
        )
    return (arr != 0).astype(np.uint8)


def read_mask(path, allowed_values):
    """``read_binary_mask`` when ``allowed_values`` is ``BINARY``, else ``read_label_mask``."""
    if allowed_values == BINARY:
        return read_binary_mask(path)
    return read_label_mask(path, allowed_values)


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

    With ``options`` (:class:`~ct_lesion_d2.data.readers.image_input.ImageInputOptions`), as
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
