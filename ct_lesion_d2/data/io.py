"""Reading CT slices and label masks with errors that name the file and the problem."""
import glob
import json
import os
import shutil
import tempfile

import numpy as np
from PIL import Image, UnidentifiedImageError


# File extensions read as image slices (PNG/JPG and the other formats PIL decodes).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


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
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombError) as e:
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


def _fsync_folder(folder):
    # A rename is durable once the folder entry is on disk; not every OS lets a folder be synced.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class StagedWrites:
    """Files written to temporary names next to their targets, then renamed onto them together.

    ``stage`` writes and flushes a file under a hidden ``.tmp-<name>.*`` name; ``commit`` renames
    every staged file onto its target (``os.replace``, atomic per file); ``discard`` (or leaving a
    ``with`` block by an exception) removes them. Until ``commit``, an interruption leaves every
    target as it was; a file is never seen half-written.
    """

    def __init__(self):
        self._staged = []  # (temporary path, target)

    def stage(self, path, write, mode="wb"):
        """Write the content of ``path`` with ``write(file)`` to a temporary file."""
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".tmp-{os.path.basename(path)}.")
        os.close(fd)
        self._staged.append((tmp, path))
        with open(tmp, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        return tmp

    def commit(self):
        """Rename every staged file onto its target, in the order they were staged."""
        folders = set()
        while self._staged:
            tmp, path = self._staged.pop(0)
            os.replace(tmp, path)
            folders.add(os.path.dirname(os.path.abspath(path)))
        for folder in folders:
            _fsync_folder(folder)

    def discard(self):
        """Remove the staged files that were not committed."""
        for tmp, _ in self._staged:
            if os.path.exists(tmp):
                os.remove(tmp)
        self._staged = []

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.discard()
        return False


class StagedFolder:
    """A folder whose new content is written beside it and then swapped in.

    ``path`` is a hidden sibling (``.tmp-<name>.*``) to write into; ``commit`` moves any existing
    folder aside (``.old-<name>.*``), renames the staged one into place and deletes the old one;
    leaving a ``with`` block by an exception without ``commit`` deletes the staged folder. A run
    killed before ``commit`` leaves the old folder in place (and a ``.tmp-`` sibling); one killed
    between the two renames leaves the old folder as ``.old-<name>.*``, which
    ``recover_folder`` puts back.
    """

    def __init__(self, final):
        self.final = os.path.abspath(final)
        parent, name = os.path.split(self.final)
        os.makedirs(parent, exist_ok=True)
        self.path = tempfile.mkdtemp(dir=parent, prefix=f".tmp-{name}.")

    def commit(self):
        """Replace ``final`` (if any) by the staged folder."""
        parent, name = os.path.split(self.final)
        old = None
        if os.path.lexists(self.final):
            old = tempfile.mkdtemp(dir=parent, prefix=f".old-{name}.")
            os.rmdir(old)
            os.rename(self.final, old)
        os.rename(self.path, self.final)
        _fsync_folder(parent)
        if old is not None:
            shutil.rmtree(old)
        self.path = None

    def discard(self):
        if self.path is not None and os.path.isdir(self.path):
            shutil.rmtree(self.path)
        self.path = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.discard()
        return False


def recover_folder(final):
    """Undo what a run killed inside ``StagedFolder`` left next to ``final``: put back an old
    folder moved aside when ``final`` is missing, and delete staged (``.tmp-``) folders and
    moved-aside ones made obsolete by a complete ``final``.

    Returns:
        list[str]: what was done, one line per folder, for the log.
    """
    final = os.path.abspath(final)
    parent, name = os.path.split(final)
    if not os.path.isdir(parent):
        return []
    done = []
    olds = sorted(glob.glob(os.path.join(parent, glob.escape(f".old-{name}.") + "*")))
    if olds and not os.path.lexists(final):
        os.rename(olds[-1], final)
        done.append(f"restored {final} from {olds[-1]}, left by an interrupted run")
        olds = olds[:-1]
    staged = sorted(glob.glob(os.path.join(parent, glob.escape(f".tmp-{name}.") + "*")))
    for leftover in olds + staged:
        if os.path.isdir(leftover):
            shutil.rmtree(leftover)
        else:
            os.remove(leftover)
        done.append(f"removed {leftover}, left by an interrupted run")
    return done


def refuse_existing(paths, overwrite=False):
    """Raise ``FileExistsError`` naming the first of ``paths`` that exists, unless ``overwrite``;
    called before any work so that nothing is half done when an output is refused."""
    if overwrite:
        return
    existing = [p for p in paths if os.path.exists(p)]
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise FileExistsError(f"{existing[0]} exists{more}; pass --overwrite to replace it")


def atomic_write(path, write, mode="wb"):
    """Create or replace ``path`` through a temporary file in its folder and ``os.replace``, so
    an interruption leaves either the previous file or the complete new one."""
    with StagedWrites() as staged:
        staged.stage(path, write, mode)
        staged.commit()


def write_json_atomic(obj, path, overwrite=False):
    """Write JSON to ``path`` through a temporary file and a rename, so that an interruption
    leaves either the old file or the complete new one.

    Raises:
        FileExistsError: if ``path`` exists and ``overwrite`` is False.
    """
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it")
    atomic_write(path, lambda f: json.dump(obj, f), mode="w")
