"""HU windowing: one conversion of CT intensities to what a model was trained on.

A model's config says which intensities it expects (``INPUT.CT_INPUT_UNITS``):

- ``"uint8_windowed"`` (default): 8-bit grey after a CT window, the form of the public PNG/JPG
  lesion datasets. HU scans are windowed with ``INPUT.CT_WINDOW.{LEVEL,WIDTH}`` (lung window,
  level -600, width 1500: -1350 HU -> 0, 150 HU -> 255) and rounded to uint8, so that a DICOM
  slice reaches the model exactly as its PNG export would. 8-bit slices pass unchanged.
- ``"HU"``: raw Hounsfield units (``MODEL.PIXEL_MEAN``/``PIXEL_STD`` must then be in HU).
  8-bit slices are refused: the window threw away what lies outside it.

The training mappers and the predictor both call :func:`to_model_intensities` (through
:func:`read_model_slice` for dataset files), so training and inference see the same numbers.
"""

import numpy as np
from detectron2.data import transforms as T

from .io import DatasetFormatError
from .readers import read_scan

__all__ = [
    "CTWindowTransform",
    "INPUT_UNITS",
    "LUNG_WINDOW",
    "apply_ct_window",
    "read_model_slice",
    "to_model_intensities",
    "window_from_config",
]

INPUT_UNITS = ("uint8_windowed", "HU")
# (level, width) of the lung window in HU.
LUNG_WINDOW = (-600.0, 1500.0)


def apply_ct_window(hu, level=LUNG_WINDOW[0], width=LUNG_WINDOW[1], dtype=np.uint8):
    """Map HU linearly from ``[level - width / 2, level + width / 2]`` to ``[0, 255]``, clipped.

    Args:
        hu (np.ndarray): Hounsfield units, any shape.
        level (float): window centre in HU.
        width (float): window width in HU (positive).
        dtype: ``np.uint8`` (rounded, the 8-bit scale of the PNG datasets) or ``np.float32``.

    Returns:
        np.ndarray: same shape, 0-255.
    """
    if width <= 0:
        raise ValueError(f"CT window width must be positive; got {width}")
    low = level - width / 2.0
    scaled = np.clip((np.asarray(hu, dtype=np.float32) - low) * (255.0 / width), 0.0, 255.0)
    if np.dtype(dtype) == np.uint8:
        return np.rint(scaled).astype(np.uint8)
    return scaled.astype(dtype)


class CTWindowTransform(T.Transform):
    """:func:`apply_ct_window` as a Detectron2 ``Transform`` (geometry unchanged), for
    augmentation lists that receive HU images."""

    def __init__(self, level=LUNG_WINDOW[0], width=LUNG_WINDOW[1]):
        super().__init__()
        self._set_attributes(locals())

    def apply_image(self, img):
        return apply_ct_window(img, self.level, self.width)

    def apply_coords(self, coords):
        return coords

    def apply_segmentation(self, segmentation):
        return segmentation


def window_from_config(cfg):
    """(level, width, units) of a config, checked.

    Raises:
        ValueError: unknown ``INPUT.CT_INPUT_UNITS`` or a non-positive width.
    """
    units = cfg.INPUT.CT_INPUT_UNITS
    if units not in INPUT_UNITS:
        raise ValueError(f"INPUT.CT_INPUT_UNITS must be one of {INPUT_UNITS}; got {units!r}")
    level, width = float(cfg.INPUT.CT_WINDOW.LEVEL), float(cfg.INPUT.CT_WINDOW.WIDTH)
    if width <= 0:
        raise ValueError(f"INPUT.CT_WINDOW.WIDTH must be positive; got {width}")
    return level, width, units


def to_model_intensities(
    pixels,
    is_hu,
    level=LUNG_WINDOW[0],
    width=LUNG_WINDOW[1],
    units="uint8_windowed",
    source="<image>",
):
    """Slice intensities as the model expects them.

    Args:
        pixels (np.ndarray): (H, W) HU (``is_hu``) or 0-255 windowed grey.
        is_hu (bool): whether ``pixels`` are Hounsfield units.
        level, width (float): the CT window applied to HU for ``"uint8_windowed"`` models.
        units (str): ``INPUT.CT_INPUT_UNITS`` of the model.
        source (str): named in the error.

    Returns:
        np.ndarray: uint8 for ``"uint8_windowed"``, float32 HU for ``"HU"``.

    Raises:
        DatasetFormatError: an 8-bit slice given to a model that expects HU.
    """
    if units not in INPUT_UNITS:
        raise ValueError(f"INPUT.CT_INPUT_UNITS must be one of {INPUT_UNITS}; got {units!r}")
    if units == "HU":
        if not is_hu:
            raise DatasetFormatError(
                source,
                "the model expects Hounsfield units (INPUT.CT_INPUT_UNITS 'HU') but this "
                "is an 8-bit windowed image; give it DICOM or NIfTI input",
            )
        return np.asarray(pixels, dtype=np.float32)
    if is_hu:
        return apply_ct_window(pixels, level, width)
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def read_model_slice(file_name, cfg=None, *, window=None):
    """Read one dataset slice as the model of ``cfg`` expects it (H, W).

    Any file :func:`ct_lesion_d2.data.readers.read_scan` reads: 8-bit images through
    ``read_grey_image`` as before, DICOM and NIfTI in HU; then :func:`to_model_intensities`.

    Args:
        file_name (str): the slice.
        cfg (CfgNode or None): gives the window (``window_from_config``).
        window (tuple or None): (level, width, units) instead of ``cfg``.

    Raises:
        DatasetFormatError: unreadable file, several slices, or units the model cannot take.
    """
    level, width, units = window if window is not None else window_from_config(cfg)
    scan = read_scan(file_name)
    if scan.num_slices != 1:
        raise DatasetFormatError(file_name, f"{scan.num_slices} slices; a dataset record is one")
    return to_model_intensities(scan.pixels[0], scan.is_hu, level, width, units, file_name)
