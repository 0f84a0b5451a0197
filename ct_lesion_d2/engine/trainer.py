"""Detectron2's ``DefaultTrainer`` with the project's evaluators, mappers and optimizer."""
import logging
import os

import torch
from detectron2.data import (
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
)
from detectron2.engine import DefaultTrainer
from detectron2.evaluation import COCOEvaluator

from ..data.mappers import ClassificationDatasetMapper, CTLesionDatasetMapper
from ..evaluation import CTClassificationEvaluator
from ..solver import build_ct_optimizer

logger = logging.getLogger(__name__)

CLASSIFIER_META_ARCHITECTURES = ("CTMaskNetClassifier",)


def resolve_device(cfg):
    """Fall back to the CPU when the config asks for CUDA on a machine without it.

    Detectron2's default ``MODEL.DEVICE`` is "cuda"; the project runs on CUDA where there is a
    GPU and on the CPU everywhere else. Modifies ``cfg`` (unfrozen) in place.
    """
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logger.warning("MODEL.DEVICE=%s but CUDA is not available: using the CPU", cfg.MODEL.DEVICE)
        cfg.MODEL.DEVICE = "cpu"
    return cfg


def is_classifier(cfg):
    """Whether the config builds an image classifier rather than a lesion segmenter."""
    return cfg.MODEL.META_ARCHITECTURE in CLASSIFIER_META_ARCHITECTURES


class CTLesionTrainer(DefaultTrainer):
    """``DefaultTrainer`` for both model kinds.

    Lesion segmenters get ``CTLesionDatasetMapper`` (Detectron2's mapper, plus DICOM and NIfTI
    slices windowed per ``INPUT.CT_WINDOW``) and ``COCOEvaluator`` (bbox, segm) in its
    pure-Python mode, which needs no compiled Detectron2 op; classifiers get
    ``ClassificationDatasetMapper`` and ``CTClassificationEvaluator``. Adam is available
    through ``SOLVER.CT_OPTIMIZER``.
    """

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", "coco")
        if evaluator_type == "ct_classification":
            return CTClassificationEvaluator(dataset_name, output_dir=output_folder)
        return COCOEvaluator(dataset_name, output_dir=output_folder, use_fast_impl=False)

    @classmethod
    def build_train_loader(cls, cfg):
        mapper_class = ClassificationDatasetMapper if is_classifier(cfg) else CTLesionDatasetMapper
        return build_detection_train_loader(cfg, mapper=mapper_class(cfg, True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        mapper_class = ClassificationDatasetMapper if is_classifier(cfg) else CTLesionDatasetMapper
        return build_detection_test_loader(cfg, dataset_name, mapper=mapper_class(cfg, False))

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_ct_optimizer(cfg, model)
