"""Batched slice predictor: lesions, raw mask logits, the ranked RoI batch and class scores.

``DefaultPredictor`` runs one image and keeps only the post-processed instances. The paper's
analysis (docs/PAPER.md, section 5) also needs the mask logits before the sigmoid, the ranked
batch of B RoIs and the classifier's class scores, so :class:`CTLesionPredictor` drives the
models directly, with ``DefaultPredictor``'s steps: build, load ``MODEL.WEIGHTS``, resize with
``INPUT.{MIN,MAX}_SIZE_TEST``, eval mode, no gradients.
"""

import logging
import os
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from detectron2.data import transforms as T
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Instances
from tqdm import tqdm

from ..config import get_cfg_for
from ..data.datasets.metadata import PAPER_IMAGE_CLASSES, image_class_names
from ..data.transforms import to_model_intensities, window_from_config
from ..modeling.detect import detect, same_size_groups
from ..modeling.meta_arch.covid_ct_mask_net import (
    ranked_roi_batches,
    rescaled_roi_boxes,
    roi_batch_options,
)
from .weights_check import build_checked_model

__all__ = ["CTLesionPredictor", "SlicePrediction", "build_predict_config"]

logger = logging.getLogger(__name__)


@dataclass
class SlicePrediction:
    """What the models say about one slice, on the CPU, in the slice's own pixel frame.

    Attributes:
        instances (Instances): ``pred_boxes``, ``scores``, ``pred_classes``, ``pred_masks``
            (bool, H x W) and ``pred_mask_logits`` (float, 28 x 28 logits of the predicted
            class, before the sigmoid) of the lesions above the confidence threshold.
        roi_boxes (Tensor): (B, 4) XYXY boxes of the ranked RoI batch.
        roi_scores (Tensor): (B,) their confidences, non-increasing.
        roi_num_detections (int): distinct RoIs in the batch before replication.
        roi_source (str): "classifier" (the batch module S saw) or "segmenter" (the same
            ranking computed on the segmentation model, when no classifier is given).
        class_probs (Tensor or None): (K,) sigmoid class scores of the classifier.
    """

    instances: Instances
    roi_boxes: torch.Tensor
    roi_scores: torch.Tensor
    roi_num_detections: int
    roi_source: str
    class_probs: Optional[torch.Tensor] = None


def _load(cfg):
    # weights that do not fit the model stop here (WeightsError), never load partly
    return build_checked_model(cfg)


class CTLesionPredictor:
    """Lesion segmenter, optionally with a COVID-CT-Mask-Net classifier, on batches of slices.

    Each model gets the slice in the intensities its config expects
    (``to_model_intensities``: HU windowed per ``INPUT.CT_WINDOW`` for ``"uint8_windowed"``
    models), as a 3-channel image resized per ``INPUT.{MIN,MAX}_SIZE_TEST``.

    Example::

        predictor = CTLesionPredictor(cfg)
        scan = read_scan("series_folder/")
        predictions = predictor(scan.pixels[:4], scan.is_hu)
    """

    @classmethod
    def from_zoo(
        cls,
        name=None,
        classifier_cfg=None,
        *,
        classifier_model=None,
        opts=(),
        device=None,
        confidence_threshold=None,
    ):
        """The predictor of a model-zoo segmenter (docs/MODEL_ZOO.md), its weights checked by
        hash; ``name`` None is the default zoo model. ``classifier_model`` names a zoo
        classifier (its weights checked the same way), instead of a ``classifier_cfg``."""
        from ..model_zoo import DEFAULT_ZOO_MODEL, zoo_entry

        name = name or DEFAULT_ZOO_MODEL
        zoo_entry(name, "segmentation")
        if classifier_model:
            zoo_entry(classifier_model, "classification")
        if classifier_model and classifier_cfg is not None:
            raise ValueError("give a zoo classifier or a classifier config, not both")
        cfg = build_predict_config(None, None, opts, device, confidence_threshold, zoo_model=name)
        if classifier_model:
            classifier_cfg = build_predict_config(
                None, device=cfg.MODEL.DEVICE, zoo_model=classifier_model
            )
        return cls(cfg, classifier_cfg)

    def __init__(self, cfg, classifier_cfg=None, models=None):
        """
        Args:
            cfg (CfgNode): segmentation config with ``MODEL.WEIGHTS`` (``MODEL.MASK_ON``).
            classifier_cfg (CfgNode or None): ``CTMaskNetClassifier`` config with weights.
            models (tuple or None): already built (segmenter, classifier) in eval mode, used
                instead of loading ``MODEL.WEIGHTS`` (tests and notebooks).
        """
        if not cfg.MODEL.MASK_ON:
            raise ValueError("the segmentation config must have MODEL.MASK_ON True")
        if cfg.TEST.AUG.ENABLED:
            raise ValueError(
                "TEST.AUG.ENABLED: the predictor runs one view per slice; test-time "
                "augmentation is for tools/train_net.py --eval-only. Set TEST.AUG.ENABLED False"
            )
        self.cfg = cfg.clone()
        self.classifier_cfg = classifier_cfg.clone() if classifier_cfg is not None else None
        if models is None:
            segmenter = _load(self.cfg)
            classifier = _load(self.classifier_cfg) if self.classifier_cfg is not None else None
        else:
            segmenter, classifier = models
        self.model, self.classifier = segmenter, classifier
        self.window = window_from_config(self.cfg)
        self.classifier_window = window_from_config(classifier_cfg) if classifier_cfg else None
        self.roi_options = roi_batch_options(self.cfg)

    @property
    def class_names(self):
        """list[str] or None: the classifier's image classes, as registered for its config's
        datasets (see ``image_class_names``)."""
        if self.classifier is None:
            return None
        if self.classifier_cfg is not None:
            return image_class_names(self.classifier_cfg)
        num_classes = self.classifier.num_classes
        if num_classes == len(PAPER_IMAGE_CLASSES):
            return list(PAPER_IMAGE_CLASSES)
        return [f"class {i}" for i in range(num_classes)]

    def display_image(self, pixels, is_hu):
        """The slice as 8-bit grey for drawing: the segmenter's window applied to HU."""
        level, width, _ = self.window
        return to_model_intensities(pixels, is_hu, level, width, "uint8_windowed")

    def _inputs(self, slices, is_hu, window, cfg, names):
        level, width, units = window
        resize = T.ResizeShortestEdge(
            [cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST
        )
        inputs = []
        for pixels, name in zip(slices, names):
            grey = to_model_intensities(pixels, is_hu, level, width, units, name)
            image = np.repeat(grey[:, :, None], 3, axis=2)
            height, width_px = image.shape[:2]
            image = resize.get_transform(image).apply_image(image)
            tensor = torch.as_tensor(
                np.ascontiguousarray(image.transpose(2, 0, 1)).astype("float32")
            )
            inputs.append({"image": tensor, "height": height, "width": width_px})
        return inputs

    @torch.no_grad()
    def __call__(self, slices, is_hu, names=None):
        """Predict a batch of slices.

        Args:
            slices (Sequence[np.ndarray]): (H, W) slices, HU when ``is_hu`` else 0-255 grey.
            is_hu (bool): see :class:`ct_lesion_d2.data.readers.Scan`.
            names (Sequence[str] or None): named in errors.

        Returns:
            list[SlicePrediction]
        """
        names = list(names) if names is not None else [f"slice {i}" for i in range(len(slices))]
        inputs = self._inputs(slices, is_hu, self.window, self.cfg, names)
        instances, batches = self._segment(inputs)
        if self.classifier is None:
            return [
                SlicePrediction(inst, *batch, "segmenter")
                for inst, batch in zip(instances, batches)
            ]
        inputs = self._inputs(slices, is_hu, self.classifier_window, self.classifier_cfg, names)
        return [
            SlicePrediction(
                instances=inst,
                roi_boxes=output["roi_boxes"].tensor.cpu(),
                roi_scores=output["roi_scores"].cpu(),
                roi_num_detections=int(output["roi_num_detections"]),
                roi_source="classifier",
                class_probs=output["class_probs"].cpu(),
            )
            for inst, output in zip(instances, self.classifier(inputs))
        ]

    def predict_scan(self, scan, batch_size=4, progress=True):
        """Predict every slice of a scan, ``batch_size`` slices per forward pass.

        Args:
            scan (Scan): from ``ct_lesion_d2.data.readers``.
            batch_size (int): slices per batch.
            progress (bool): show a tqdm progress bar over the slices.

        Returns:
            list[SlicePrediction]: one per slice, in scan order.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1; got {batch_size}")
        results = []
        with tqdm(
            total=scan.num_slices,
            desc=os.path.basename(scan.source.rstrip("/")),
            unit="slice",
            disable=not progress,
        ) as bar:
            for start in range(0, scan.num_slices, batch_size):
                stop = min(start + batch_size, scan.num_slices)
                results += self(scan.pixels[start:stop], scan.is_hu, scan.slice_names[start:stop])
                bar.update(stop - start)
        return results

    def _segment(self, inputs):
        """The segmenter's detector pass (:func:`detect`, keeping the mask logits of each
        instance) and, when there is no classifier, the segmenter's ranked RoI batch; one pass
        per group of equal-sized slices (``same_size_groups``), so that a slice's prediction
        does not depend on the other slices of its batch.

        Returns:
            tuple: post-processed ``Instances`` per slice (CPU), and per slice either None or
            (roi_boxes (B, 4) in the slice's frame, roi_scores (B,), num_detections).
        """
        instances, batches = [None] * len(inputs), [None] * len(inputs)
        for group in same_size_groups(inputs):
            part = self._segment_one_size([inputs[i] for i in group])
            for j, i in enumerate(group):
                instances[i], batches[i] = part[0][j], part[1][j]
        return instances, batches

    def _segment_one_size(self, inputs):
        """:meth:`_segment` on slices of one size: one detector pass."""
        images, features, proposals, raw = detect(self.model, inputs, mask_logits=True)
        batches = [None] * len(inputs)
        if self.classifier is None:
            batches = [
                _rescaled(batch, size, x)
                for batch, size, x in zip(
                    ranked_roi_batches(
                        self.model.roi_heads, features, proposals, **self.roi_options
                    ),
                    images.image_sizes,
                    inputs,
                )
            ]
        instances = [
            detector_postprocess(inst, x["height"], x["width"]).to("cpu")
            for inst, x in zip(raw, inputs)
        ]
        return instances, batches


def _rescaled(batch, image_size, x):
    """(boxes, scores, num_detections) of a RoIBatch, boxes rescaled to the input's size."""
    boxes = rescaled_roi_boxes(batch, x, image_size)
    return boxes.tensor.cpu(), batch.scores.detach().cpu(), int(batch.num_detections)


def build_predict_config(
    config_file, weights=None, opts=(), device=None, confidence_threshold=None, zoo_model=None
):
    """A frozen inference config: project keys, the file, ``opts``, weights, device, threshold.

    Args:
        config_file (str or None): YAML of a segmentation or classifier model; None with no
            ``weights``: the model zoo's (``zoo_model``, else the default zoo segmenter).
        weights (str or None): checkpoint, overriding ``MODEL.WEIGHTS``.
        zoo_model (str or None): a ``ZOO_MODELS`` name: its config and checked weights.
        opts (Sequence[str]): KEY VALUE overrides.
        device (str or None): "cpu", "cuda", "cuda:1" ...; None keeps ``MODEL.DEVICE``. CUDA
            falls back to the CPU with a warning where it is absent (``resolve_device``).
        confidence_threshold (float or None): ``MODEL.ROI_HEADS.SCORE_THRESH_TEST``.

    Returns:
        CfgNode
    """
    if config_file is None or zoo_model:
        from ..model_zoo import DEFAULT_ZOO_MODEL, ZOO_MODELS, zoo_weights

        if config_file is not None or weights:
            raise ValueError("give a zoo model or a config file and weights, not both")
        zoo_model = zoo_model or DEFAULT_ZOO_MODEL
        config_file, weights = ZOO_MODELS[zoo_model]["config"], zoo_weights(zoo_model)
    cfg = get_cfg_for(config_file, opts, device)
    if weights:
        cfg.MODEL.WEIGHTS = weights
    if confidence_threshold is not None:
        cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = float(confidence_threshold)
    cfg.freeze()
    return cfg
