"""Reading CT slices and label masks with errors that name the file and the problem."""
import json
import os
import tempfile

import numpy as np
from PIL import Image, UnidentifiedImageError


class DatasetFormatError(ValueError):
    """A dataset file is missing, unreadable or inconsistent; the message names the file."""

    def __init__(self, path, problem):
        super().__init__(f"{path}: {problem}")
        self.path = str(path)
        self.problem = problem


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
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DatasetFormatError(path, f"cannot read {kind} ({e})") from None


def _grey_uint8(img):
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        return ((arr - lo) * scale).round().astype(np.uint8)
    return np.asarray(img.convert("L"))


def read_grey_image(path):
    """Read a slice as a 2-D uint8 array (grey, RGB, RGBA, 8 or 16 bit).

    Colour images are converted to luminance; 16-bit images are scaled to 0-255 by their range.

    Raises:
        DatasetFormatError: if the file is missing or cannot be decoded.
    """
    return _decode(path, "image", _grey_uint8)


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
    arr = _decode(path, "mask", np.asarray)
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


def write_json_atomic(obj, path, overwrite=False):
    """Write JSON to ``path`` through a temporary file and a rename, so that an interruption
    leaves either the old file or the complete new one.

    Raises:
        FileExistsError: if ``path`` exists and ``overwrite`` is False.
    """
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
