"""Checkpointer steps of the COVID-CT-Mask-Net classifier: constructors build, these load.

The classifier shares its backbone, RPN and RoI box branch with the Mask R-CNN, so their keys
match one to one. Detectron2's ``DetectionCheckpointer`` does the loading (file formats, the
``module.`` prefix of DDP checkpoints, skipping tensors of the wrong shape); this module only
keeps its report of incompatible keys and adds which keys were taken.

- :func:`load_segmentation_weights`: a new classifier's detector from the segmentation
  checkpoint, when training starts (the trainer calls it; the constructor does not, so that a
  model builds from its config alone, with no file on disk);
- :func:`load_model_weights`: any model for inference, from ``MODEL.WEIGHTS`` (a trained
  classifier checkpoint is complete), or, for a classifier without one, from
  ``SEGMENTATION_WEIGHTS`` (random module S on a trained detector, as the benchmarks use).
"""

import logging
from typing import List, NamedTuple, Tuple

from detectron2.checkpoint import DetectionCheckpointer

from ...utils import unwrap_model
from .image_branch import DETECTOR_BACKBONE

logger = logging.getLogger(__name__)


class SegmentationWeightsReport(NamedTuple):
    """What a segmentation checkpoint gave the classifier.

    Attributes:
        path (str): the checkpoint file ("" when none was loaded).
        loaded (list[str]): model keys filled from the checkpoint.
        missing (list[str]): model keys the checkpoint did not fill (module S is expected).
        unused (list[str]): checkpoint keys the model has no use for (the mask head is expected).
        incorrect_shapes (list[tuple]): ``(key, checkpoint shape, model shape)``, not loaded.
    """

    path: str
    loaded: List[str]
    missing: List[str]
    unused: List[str]
    incorrect_shapes: List[Tuple[str, tuple, tuple]]


class ReportingCheckpointer(DetectionCheckpointer):
    """A ``DetectionCheckpointer`` that keeps the incompatible keys of its last load in
    ``incompatible`` (fvcore's ``_IncompatibleKeys``) and logs their names at DEBUG only
    (the callers say in one line what they mean)."""

    incompatible = None

    def _load_model(self, checkpoint):
        self.incompatible = super()._load_model(checkpoint)
        return self.incompatible

    def _log_incompatible_keys(self, incompatible):
        logger.debug(
            f"missing {incompatible.missing_keys}; unexpected {incompatible.unexpected_keys}; "
            f"other shapes {incompatible.incorrect_shapes}"
        )


def load_segmentation_weights(model, path):
    """Fill ``model`` with the weights of a segmentation checkpoint, strictly=False, and log it.

    Args:
        model (nn.Module): a ``CTMaskNetClassifier`` (or any model sharing key names).
        path (str): a Detectron2 checkpoint of the Mask R-CNN; "" keeps the random detector
            and logs a warning.

    Returns:
        SegmentationWeightsReport: keys taken, missing and unused.
    """
    checkpointer = ReportingCheckpointer(model)
    model_keys = list(checkpointer.model.state_dict())  # without a DDP wrapper's prefix
    if not path:
        logger.warning(
            "MODEL.CT_CLASSIFIER.SEGMENTATION_WEIGHTS is empty: the detector of the classifier "
            "keeps its random weights; COVID-CT-Mask-Net expects a trained segmentation model."
        )
        return SegmentationWeightsReport("", [], model_keys, [], [])
    checkpointer.load(path, checkpointables=[])
    incompatible = checkpointer.incompatible
    skipped = {key for key, _, _ in incompatible.incorrect_shapes}
    missing = set(incompatible.missing_keys) | skipped
    report = SegmentationWeightsReport(
        path=path,
        loaded=[k for k in model_keys if k not in missing],
        missing=[k for k in model_keys if k in missing],
        unused=list(incompatible.unexpected_keys),
        incorrect_shapes=list(incompatible.incorrect_shapes),
    )
    _log_report(report)
    return report


def is_classifier_config(cfg):
    """Whether ``cfg`` builds a ``CTMaskNetClassifier`` (rather than a lesion segmenter)."""
    return cfg.MODEL.META_ARCHITECTURE == "CTMaskNetClassifier"


def initialize_from_segmenter(model, cfg):
    """The step before training a new classifier: its detector from ``SEGMENTATION_WEIGHTS``,
    and a ``"detector_backbone"`` image branch from that detector's ResNet.

    ``MODEL.WEIGHTS``, when given, is loaded after it by the trainer's checkpointer, as
    Detectron2 loads it for any model. A segmenter config leaves ``model`` unchanged.

    Returns:
        SegmentationWeightsReport or None: None for a segmenter config.
    """
    if not is_classifier_config(cfg):
        return None
    report = load_segmentation_weights(model, cfg.MODEL.CT_CLASSIFIER.SEGMENTATION_WEIGHTS)
    classifier = unwrap_model(model)
    branch = classifier.image_branch
    if branch is None or branch.arch != DETECTOR_BACKBONE:
        return report
    if not report.path:
        logger.warning(
            f"MODEL.CT_CLASSIFIER.IMAGE_BRANCH {DETECTOR_BACKBONE}: without SEGMENTATION_WEIGHTS "
            "the branch starts from random weights, as 'ct_resnet' does."
        )
        return report
    copied = branch.initialize_from_detector(classifier.backbone.bottom_up)
    logger.info(
        f"Image branch {DETECTOR_BACKBONE}: {copied} tensors from the detector's ResNet of "
        f"{report.path}."
    )
    return report


def load_model_weights(model, cfg):
    """Fill a model built from ``cfg`` for inference (prediction, export, benchmarks).

    ``MODEL.WEIGHTS`` when given: a trained checkpoint, complete for either model kind (no
    segmentation checkpoint is read). Without it, a classifier's detector comes from
    ``SEGMENTATION_WEIGHTS`` (module S stays random; a ``"detector_backbone"`` image branch
    takes the detector's ResNet) and a segmenter stays random.

    Returns:
        str: the file loaded ("" when none).
    """
    if cfg.MODEL.WEIGHTS:
        DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
        return cfg.MODEL.WEIGHTS
    if is_classifier_config(cfg) and cfg.MODEL.CT_CLASSIFIER.SEGMENTATION_WEIGHTS:
        return initialize_from_segmenter(model, cfg).path
    return ""


def _log_report(report):
    """Log a one-line summary (INFO) and the key lists (DEBUG: hundreds of names) of a
    ``SegmentationWeightsReport``."""
    logger.info(
        f"Segmentation weights {report.path}: {len(report.loaded)} keys loaded, "
        f"{len(report.missing)} model keys missing, {len(report.unused)} checkpoint keys unused, "
        f"{len(report.incorrect_shapes)} of the wrong shape."
    )
    logger.debug("Loaded keys: " + ", ".join(report.loaded))
    if report.missing:
        logger.debug("Model keys not in the checkpoint: " + ", ".join(report.missing))
    if report.unused:
        logger.debug(
            "Checkpoint keys unused (a mask head is expected): " + ", ".join(report.unused)
        )
    for key, shape_checkpoint, shape_model in report.incorrect_shapes:
        logger.warning(f"Not loaded, {key}: checkpoint {shape_checkpoint}, model {shape_model}")
