"""A patient's scan as the readers return it, and what the readers share.

Every reader (``dicom``, ``nifti``, ``images``) returns a :class:`Scan`, a stack of axial
slices with what is known about its geometry. DICOM and NIfTI pixels are Hounsfield units
(``is_hu``); PNG/JPG slices are taken as 8-bit images to which a window was already applied (the
form of the public lesion datasets).

Orientation: axis-aligned axial slices are turned into the radiological view (rows from
anterior to posterior, columns from the patient's right to left, slices from inferior to
superior), whatever order the file stored them in. Axis-aligned coronal and sagittal volumes
(NIfTI, or DICOM series of evenly spaced slices) are resampled to such axial slices by
reordering their voxels (``resampled_from``). Oblique slices and single non-axial slices are
kept as stored, with a warning (``geometry.non_axial_input`` says why in words).

Padding: voxels outside the scanner's field of view (DICOM ``PixelPaddingValue`` and
``PixelPaddingRangeLimit``; without those tags, and in NIfTI, any value below
``PADDING_BELOW_HU``, which neither tissue nor air reaches; NaN or infinite NIfTI voxels) are
set to ``PADDING_HU`` and flagged in ``Scan.padding_mask``. ``PADDING_HU`` lies below every
useful window, so padding becomes black after windowing, as it is in the 8-bit datasets.

All failures raise :class:`DatasetFormatError` whose message names the offending file.
"""

import os
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np

from ..io import DatasetFormatError

__all__ = ["NIFTI_EXTENSIONS", "PADDING_BELOW_HU", "PADDING_HU", "Scan"]

NIFTI_EXTENSIONS = (".nii", ".nii.gz")

# Value given to voxels outside the field of view (GE's -3024, below any window).
PADDING_HU = -3024.0
# Without a padding tag, HU values below this are padding: the CT scale starts at -1024.
PADDING_BELOW_HU = -1500.0

# Files a DICOM folder may hold besides the slices.
_IGNORED_FILES = ("DICOMDIR", "Thumbs.db")


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
        stored_orientation (str or None): the plane the input stored its slices in, "axial",
            "coronal", "sagittal" or "oblique"; None when the input does not say (images).
        resampled_from (str or None): "coronal" or "sagittal" when the axial slices were
            resampled from a volume stored in that plane, else None.
        source_slices (list[str] or None): of a resampled DICOM series, the file names of its
            stored slices in the order of their positions (``slice_names`` name the axial
            slices).
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
    stored_orientation: Optional[str] = None
    resampled_from: Optional[str] = None
    source_slices: Optional[List[str]] = None
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
