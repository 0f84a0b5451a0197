"""Detectron2's ``DefaultTrainer`` with the project's evaluator and optimizer choices."""
import logging
import os

import torch
from detectron2.engine import DefaultTrainer
from detectron2.evaluation import COCOEvaluator

from ..solver import build_ct_optimizer

logger = logging.getLogger(__name__)


def resolve_device(cfg):
    """Fall back to the CPU when the config asks for CUDA on a machine without it.

    Detectron2's default ``MODEL.DEVICE`` is "cuda"; the project runs on CUDA where there is a
    GPU and on the CPU everywhere else. Modifies ``cfg`` (unfrozen) in place.
    """
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        logger.warning("MODEL.DEVICE=%s but CUDA is not available: using the CPU", cfg.MODEL.DEVICE)
        cfg.MODEL.DEVICE = "cpu"
    return cfg


class CTLesionTrainer(DefaultTrainer):
    """``DefaultTrainer`` with ``COCOEvaluator`` (bbox, segm) in its pure-Python mode, which
    needs no compiled Detectron2 op, and Adam available through ``SOLVER.CT_OPTIMIZER``."""

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return COCOEvaluator(dataset_name, output_dir=output_folder, use_fast_impl=False)

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_ct_optimizer(cfg, model)
