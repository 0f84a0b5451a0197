"""Dataset mappers: lesion records and classification records, read from PNG/JPG, DICOM or
NIfTI slices with the intensities the model expects (``INPUT.CT_INPUT_UNITS``)."""

import copy
import logging

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from .augmentation import build_ct_augmentation, needs_box_recompute
from .io import DatasetFormatError
from .transforms import LUNG_WINDOW, read_model_slice, window_from_config

logger = logging.getLogger(__name__)

_CHANNELS = {"RGB": 3, "BGR": 3, "L": 1}


def crop_to_box(image, box, file_name=None):
    """Crop an HxW(xC) array to ``[xmin, ymin, xmax, ymax]`` (exclusive ends), clipped to it.

    Args:
        image (np.ndarray): the slice.
        box (Sequence[int]): the crop box in pixels.
        file_name (str or None): named in the error.

    Returns:
        np.ndarray: the cropped view.

    Raises:
        DatasetFormatError: the box does not overlap the image.
    """
    height, width = image.shape[:2]
    xmin, ymin = max(0, int(box[0])), max(0, int(box[1]))
    xmax, ymax = min(width, int(box[2])), min(height, int(box[3]))
    if xmax <= xmin or ymax <= ymin:
        raise DatasetFormatError(
            file_name or "<image>",
            f"crop box {list(box)} is outside the image of size {width}x{height} (width x height)",
        )
    return image[ymin:ymax, xmin:xmax]


class ClassificationDatasetMapper:
    """Map a classification record to the input of ``CTMaskNetClassifier``.

    Every file (grey, RGB, RGBA, 8 or 16 bit) is read as one grey channel with
    ``read_grey_image`` (colour becomes luminance, 16 bit is scaled by its range), DICOM and
    NIfTI slices in HU and windowed per ``INPUT.CT_WINDOW`` (``read_model_slice``), and
    replicated to the channels of ``INPUT.FORMAT``, the way the segmentation model sees them.
    The record's ``crop`` box is applied when ``use_crop`` is set, then the augmentations
    (``ResizeShortestEdge``; at train time ``RandomFlip`` per ``INPUT.RANDOM_FLIP`` and the
    ``INPUT.CT_AUGMENTATION`` ones switched on, see ``build_ct_augmentation``).

    The output has ``image`` (CxHxW float32, 0-255), ``height`` and ``width`` (the size before
    resizing, i.e. of the crop when cropping, so that boxes the model rescales to it stay in
    that frame), ``class_id``, ``file_name``, ``image_id`` and, when cropped, ``crop``.
    """

    @configurable
    def __init__(
        self,
        is_train,
        *,
        augmentations,
        image_format="RGB",
        use_crop=False,
        window=LUNG_WINDOW + ("uint8_windowed",),
    ):
        """
        Args:
            is_train (bool): training (random augmentations) or inference.
            augmentations (list[Augmentation or Transform]): applied to the grey slice.
            image_format (str): ``"RGB"``, ``"BGR"`` (3 equal channels) or ``"L"`` (one).
            use_crop (bool): crop to the record's ``crop`` box (COVIDx-CT body crop) first.
            window (tuple): (level, width, units) of ``INPUT.CT_WINDOW`` and
                ``INPUT.CT_INPUT_UNITS`` (default: the lung window and 8-bit input).
        """
        if image_format not in _CHANNELS:
            raise ValueError(f"image_format {image_format!r} not supported; use {list(_CHANNELS)}")
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.use_crop = use_crop
        self.window = tuple(window)
        mode = "training" if is_train else "inference"
        logger.info(f"[ClassificationDatasetMapper] Augmentations used in {mode}: {augmentations}")

    @classmethod
    def from_config(cls, cfg, is_train=True):
        return {
            "is_train": is_train,
            "augmentations": build_ct_augmentation(cfg, is_train),
            "image_format": cfg.INPUT.FORMAT,
            "use_crop": cfg.INPUT.CT_CLASSIFIER_CROP,
            "window": window_from_config(cfg),
        }

    def __call__(self, dataset_dict):
        """
        Args:
            dataset_dict (dict): a record with ``file_name`` and optionally ``class_id``
                (absent for unlabelled slices), ``image_id`` and ``crop``.

        Returns:
            dict: the model input (see the class docstring); ``dataset_dict`` is not modified.
        """
        image = read_model_slice(dataset_dict["file_name"], window=self.window)
        result = {}
        if self.use_crop and dataset_dict.get("crop") is not None:
            image = crop_to_box(image, dataset_dict["crop"], dataset_dict["file_name"])
            result["crop"] = list(dataset_dict["crop"])
        height, width = image.shape
        aug_input = T.AugInput(image)
        self.augmentations(aug_input)
        grey = torch.from_numpy(np.array(aug_input.image, dtype=np.float32))
        result.update(
            image=grey.unsqueeze(0).repeat(_CHANNELS[self.image_format], 1, 1),
            height=height,
            width=width,
            file_name=dataset_dict["file_name"],
            image_id=dataset_dict.get("image_id", dataset_dict["file_name"]),
        )
        if dataset_dict.get("class_id") is not None:
            result["class_id"] = int(dataset_dict["class_id"])
        return result


class CTLesionDatasetMapper(DatasetMapper):
    """Detectron2's ``DatasetMapper`` reading every slice with ``read_model_slice``.

    PNG/JPG slices are read with ``read_grey_image``, DICOM and NIfTI slices in HU (windowed per
    ``INPUT.CT_WINDOW`` for ``"uint8_windowed"`` models); the slice is replicated to the
    channels of ``INPUT.FORMAT`` and mapped as Detectron2 maps an image (augmentations,
    annotations). Grey 8-bit slices give the pixels of Detectron2's ``read_image``, which is not
    used: it decodes a damaged PNG into a partly blank image without an error (its EXIF lookup
    swallows the decoder's error) and clips 16-bit slices to 0-255, where a bad file here raises
    ``DatasetFormatError`` naming it and a 16-bit slice is scaled by its range.
    """

    @configurable
    def __init__(self, is_train=True, *, window=LUNG_WINDOW + ("uint8_windowed",), **kwargs):
        """
        Args:
            window (tuple): (level, width, units) of ``INPUT.CT_WINDOW`` and
                ``INPUT.CT_INPUT_UNITS``.
            is_train, kwargs: as ``DatasetMapper``.
        """
        super().__init__(is_train, **kwargs)
        self.window = tuple(window)

    @classmethod
    def from_config(cls, cfg, is_train=True):
        ret = super().from_config(cfg, is_train)
        # Detectron2's resize and flip, then the INPUT.CT_AUGMENTATION ones (training only).
        ret["augmentations"] = build_ct_augmentation(cfg, is_train)
        ret["recompute_boxes"] = ret["recompute_boxes"] or needs_box_recompute(cfg)
        ret["window"] = window_from_config(cfg)
        return ret

    def __call__(self, dataset_dict):
        dataset_dict = copy.deepcopy(dataset_dict)
        grey = read_model_slice(dataset_dict["file_name"], window=self.window)
        image = np.repeat(grey[:, :, None], _CHANNELS.get(self.image_format, 3), axis=2)
        utils.check_image_size(dataset_dict, image)
        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if not self.is_train:
            dataset_dict.pop("annotations", None)
        elif "annotations" in dataset_dict:
            self._transform_annotations(dataset_dict, transforms, image.shape[:2])
        return dataset_dict
