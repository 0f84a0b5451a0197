"""Training augmentations of the real-CT recipe: geometry (flips on both axes, small
rotations, scale jitter) and intensity (contrast, brightness, gamma, CLAHE).

The intensity augmentations are how one model serves the three intensity forms its users bring:
lung-window PNGs (medseg100, and DICOM / NIfTI in HU through ``INPUT.CT_WINDOW``), and
CLAHE-enhanced PNGs (covid19_ct_seg). ``RandomCLAHE`` gives lung-window slices the local
contrast of the CLAHE exports, and contrast, brightness and gamma jitter cover the rest of the
spread between scanners and exports. All of them change the image only: masks and boxes pass
through unchanged. Configured by ``INPUT.CT_AUGMENTATION`` (``config.py``); every key off gives
Detectron2's ``build_augmentation`` unchanged, as in the paper's configs.
"""

import cv2
import numpy as np
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from fvcore.transforms.transform import Transform

__all__ = [
    "GammaTransform",
    "CLAHETransform",
    "RandomCLAHE",
    "RandomGamma",
    "build_ct_augmentation",
]


class _IntensityTransform(Transform):
    """A transform of pixel values only: coordinates and segmentation masks are unchanged."""

    def apply_coords(self, coords):
        return coords

    def apply_segmentation(self, segmentation):
        return segmentation

    def inverse(self):
        return T.NoOpTransform()


class GammaTransform(_IntensityTransform):
    """``255 * (x / 255) ** gamma`` on a uint8 (or 0-255 float) image."""

    def __init__(self, gamma):
        super().__init__()
        self._set_attributes(locals())

    def apply_image(self, img):
        out = 255.0 * np.power(np.asarray(img, dtype=np.float32) / 255.0, self.gamma)
        return np.clip(out, 0, 255).astype(img.dtype) if img.dtype == np.uint8 else out


class CLAHETransform(_IntensityTransform):
    """OpenCV's contrast-limited adaptive histogram equalisation of a grey uint8 image (HxW or
    HxWxC with equal channels, equalised once and replicated)."""

    def __init__(self, clip_limit=2.0, tile_grid_size=8):
        super().__init__()
        self._set_attributes(locals())

    def apply_image(self, img):
        grey = img[..., 0] if img.ndim == 3 else img
        if grey.dtype != np.uint8:
            grey = np.clip(grey, 0, 255).astype(np.uint8)
        clahe = cv2.createCLAHE(
            clipLimit=float(self.clip_limit),
            tileGridSize=(self.tile_grid_size, self.tile_grid_size),
        )
        out = clahe.apply(np.ascontiguousarray(grey))
        if img.ndim == 3:
            out = np.repeat(out[:, :, None], img.shape[2], axis=2)
        return out.astype(img.dtype)


class RandomCLAHE(T.Augmentation):
    """Apply ``CLAHETransform`` with probability ``prob``, with a clip limit drawn from
    ``clip_limit`` (min, max)."""

    def __init__(self, prob=0.5, clip_limit=(1.0, 3.0), tile_grid_size=8):
        super().__init__()
        self._init(locals())

    def get_transform(self, image):
        if self._rand_range() >= self.prob:
            return T.NoOpTransform()
        return CLAHETransform(self._rand_range(*self.clip_limit), self.tile_grid_size)


class RandomGamma(T.Augmentation):
    """``GammaTransform`` with ``log(gamma)`` uniform in ``[-log(max_gamma), log(max_gamma)]``."""

    def __init__(self, max_gamma=1.4):
        super().__init__()
        self._init(locals())

    def get_transform(self, image):
        return GammaTransform(float(np.exp(self._rand_range(-1.0, 1.0) * np.log(self.max_gamma))))


def build_ct_augmentation(cfg, is_train):
    """Detectron2's ``build_augmentation`` (resize, ``INPUT.RANDOM_FLIP``) followed, at training
    time, by the ``INPUT.CT_AUGMENTATION`` ones that are switched on.

    Returns:
        list[Augmentation]
    """
    augs = utils.build_augmentation(cfg, is_train)
    if not is_train:
        return augs
    aug = cfg.INPUT.CT_AUGMENTATION
    if aug.VERTICAL_FLIP and cfg.INPUT.RANDOM_FLIP != "vertical":
        augs.append(T.RandomFlip(horizontal=False, vertical=True))
    if aug.ROTATION > 0:
        augs.append(T.RandomRotation([-aug.ROTATION, aug.ROTATION], expand=False))
    if aug.CONTRAST > 0:
        augs.append(T.RandomContrast(1.0 - aug.CONTRAST, 1.0 + aug.CONTRAST))
    if aug.BRIGHTNESS > 0:
        augs.append(T.RandomBrightness(1.0 - aug.BRIGHTNESS, 1.0 + aug.BRIGHTNESS))
    if aug.GAMMA > 1.0:
        augs.append(RandomGamma(aug.GAMMA))
    if aug.CLAHE_PROB > 0:
        augs.append(RandomCLAHE(aug.CLAHE_PROB, tuple(aug.CLAHE_CLIP_LIMIT)))
    return augs


def needs_box_recompute(cfg):
    """Rotations make a rotated box's corners a loose box: recompute boxes from the masks."""
    return bool(cfg.MODEL.MASK_ON and cfg.INPUT.CT_AUGMENTATION.ROTATION > 0)
