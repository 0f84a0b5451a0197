"""Detectron2's ``DefaultTrainer`` with the project's evaluators, mappers and optimizer."""
import logging
import os

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import (
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.engine import DefaultTrainer
from detectron2.evaluation import COCOEvaluator

from ..data.mappers import ClassificationDatasetMapper, CTLesionDatasetMapper
from ..data.roi_batch_cache import compute_roi_batch_records
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


def match_num_classes(cfg):
    """Make a classifier's ``MODEL.CT_CLASSIFIER.NUM_CLASSES`` follow its datasets' classes.

    The classes are the ``thing_classes`` metadata of ``DATASETS.TRAIN`` (registered without
    loading the data). Modifies ``cfg`` (unfrozen) in place; segmenters are left unchanged.

    Raises:
        ValueError: the training datasets disagree on their classes.
    """
    if not is_classifier(cfg):
        return cfg
    names = {tuple(MetadataCatalog.get(d).get("thing_classes", ())) for d in cfg.DATASETS.TRAIN}
    names.discard(())
    if len(names) > 1:
        raise ValueError(f"DATASETS.TRAIN {cfg.DATASETS.TRAIN} have different classes: {names}")
    if names:
        classes = names.pop()
        if len(classes) != cfg.MODEL.CT_CLASSIFIER.NUM_CLASSES:
            logger.warning(
                "MODEL.CT_CLASSIFIER.NUM_CLASSES=%d but %s has %d classes %s: using %d",
                cfg.MODEL.CT_CLASSIFIER.NUM_CLASSES, cfg.DATASETS.TRAIN[0], len(classes),
                list(classes), len(classes),
            )
            cfg.MODEL.CT_CLASSIFIER.NUM_CLASSES = len(classes)
    return cfg


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
        if is_classifier(cfg) and cfg.MODEL.CT_CLASSIFIER.CACHE_ROI_BATCHES:
            return cls.build_cached_roi_batch_loader(cfg)
        mapper_class = ClassificationDatasetMapper if is_classifier(cfg) else CTLesionDatasetMapper
        return build_detection_train_loader(cfg, mapper=mapper_class(cfg, True))

    @classmethod
    def build_cached_roi_batch_loader(cls, cfg):
        """Training loader of precomputed ranked RoI batches (``CACHE_ROI_BATCHES``).

        The batches come from a classifier built from ``cfg`` (its detector loaded from
        ``SEGMENTATION_WEIGHTS``, then ``MODEL.WEIGHTS`` if set: the detector the trained model
        has, since it is frozen) on the inference mapper's input of each training image.
        """
        ct = cfg.MODEL.CT_CLASSIFIER
        if ct.TRAIN_BN_AFFINE:
            raise ValueError(
                "MODEL.CT_CLASSIFIER.CACHE_ROI_BATCHES needs MODEL.CT_CLASSIFIER.TRAIN_BN_AFFINE "
                "False: while the backbone BatchNorm parameters train, the RoI batches change"
            )
        if cfg.INPUT.RANDOM_FLIP != "none":
            logger.warning(
                "CACHE_ROI_BATCHES: the RoI batches are computed once without augmentation, "
                "so INPUT.RANDOM_FLIP=%s is not applied",
                cfg.INPUT.RANDOM_FLIP,
            )
        model = cls.build_model(cfg)
        if cfg.MODEL.WEIGHTS:
            DetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
        dataset_dicts = get_detection_dataset_dicts(cfg.DATASETS.TRAIN, filter_empty=False)
        records = compute_roi_batch_records(
            model, dataset_dicts, ClassificationDatasetMapper(cfg, False), cfg.SOLVER.IMS_PER_BATCH
        )
        del model
        return build_detection_train_loader(
            dataset=records,
            mapper=_unchanged,
            total_batch_size=cfg.SOLVER.IMS_PER_BATCH,
            aspect_ratio_grouping=False,
            num_workers=0,
        )

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        mapper_class = ClassificationDatasetMapper if is_classifier(cfg) else CTLesionDatasetMapper
        return build_detection_test_loader(cfg, dataset_name, mapper=mapper_class(cfg, False))

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_ct_optimizer(cfg, model)


def _unchanged(record):
    """Identity mapper of the cached RoI-batch records (already model inputs)."""
    return record
