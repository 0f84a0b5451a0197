"""Detectron2's ``DefaultTrainer`` with the project's evaluators, mappers and optimizer, and a
training loop that resumes bit for bit after a kill and stops cleanly on a non-finite loss."""
import logging
import math
import os

import torch
from detectron2.data import MetadataCatalog, build_detection_test_loader
from detectron2.engine import DefaultTrainer, hooks
from detectron2.evaluation import COCOEvaluator
from detectron2.utils import comm

from ..data.build import ResumableTrainLoader, build_resumable_train_loader
from ..data.mappers import ClassificationDatasetMapper, CTLesionDatasetMapper
from ..evaluation import CTClassificationEvaluator
from ..modeling.meta_arch.roi_batch_cache import (
    bind_roi_batch_cache,
    build_roi_batch_cache_loader,
)
from ..modeling.meta_arch.segmentation_weights import initialize_from_segmenter
from ..solver import build_ct_optimizer
from .checkpoint import AtomicDetectionCheckpointer
from .data_order import data_order_record, recorded_seed, write_data_order
from .hooks import IterationSeed

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


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite; the message names the iteration, the losses and the last
    good checkpoint."""

    def __init__(self, iteration, losses, last_checkpoint=None):
        values = ", ".join(f"{k}={v:.6g}" for k, v in sorted(losses.items()))
        bad = sorted(k for k, v in losses.items() if not math.isfinite(v))
        where = (
            f"the last good checkpoint, {last_checkpoint}, is untouched (resume from it with "
            "--resume)" if last_checkpoint else "no checkpoint had been written"
        )
        super().__init__(
            f"Loss became non-finite at iteration {iteration}: {', '.join(bad) or 'total'} "
            f"({values}). Training stopped before the optimizer step and no checkpoint was "
            f"written after it; {where}. Lower SOLVER.BASE_LR, raise SOLVER.WARMUP_ITERS or "
            "check the data (tools/validate_dataset.py)."
        )
        self.iteration = iteration
        self.losses = dict(losses)
        self.last_checkpoint = last_checkpoint


def resolve_seed(cfg):
    """A frozen copy of ``cfg`` whose ``SEED`` is the seed of this run's data order.

    ``SEED >= 0`` is kept. A negative seed (Detectron2: "random") becomes the one recorded in
    ``OUTPUT_DIR/data_order.json`` when there is one, so that ``--resume`` continues the same
    order, or else a fresh random seed, recorded when training starts.
    """
    if cfg.SEED >= 0:
        return cfg
    seed = recorded_seed(cfg.OUTPUT_DIR)
    if seed is not None:
        logger.info("SEED is %d: using seed %d recorded in %s", cfg.SEED, seed, cfg.OUTPUT_DIR)
    else:
        seed = comm.shared_random_seed()
        logger.info("SEED is %d: drew seed %d for the data order", cfg.SEED, seed)
    cfg = cfg.clone()
    cfg.defrost()
    cfg.SEED = int(seed)
    cfg.freeze()
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

    Lesion segmenters get ``CTLesionDatasetMapper`` (Detectron2's mapper reading PNG/JPG with
    the project's checked reader, and DICOM and NIfTI slices windowed per ``INPUT.CT_WINDOW``)
    and ``COCOEvaluator`` (bbox, segm) in its pure-Python mode, which needs no compiled
    Detectron2 op; classifiers get ``ClassificationDatasetMapper`` and
    ``CTClassificationEvaluator``. Adam is available through ``SOLVER.CT_OPTIMIZER``.

    Faults: checkpoints are written atomically and ``resume_or_load(resume=True)`` resumes from
    the newest complete one (``AtomicDetectionCheckpointer``); the batches, augmentations and
    random draws of iteration ``k`` depend only on ``(SEED, k)`` (``build_resumable_train_loader``,
    ``IterationSeed``), so a resumed run reaches the weights of the uninterrupted one. The seed
    and the data order are written to ``OUTPUT_DIR/data_order.json``. A non-finite loss raises
    ``NonFiniteLossError`` before the optimizer step, and no checkpoint or evaluation follows it.
    """

    def __init__(self, cfg):
        super().__init__(resolve_seed(cfg))
        # CACHE_ROI_BATCHES: the cached rows are computed by this model, on the first batch
        bind_roi_batch_cache(self.data_loader, self.model)
        self._step_failed = False
        # SimpleTrainer checks the losses in _write_metrics, between backward and the optimizer
        # step; wrapping it on the instance keeps that place for SimpleTrainer and AMPTrainer.
        self._trainer._write_metrics = self._named_loss_check(self._trainer._write_metrics)

    def _named_loss_check(self, write_metrics):
        def checked(loss_dict, data_time, prefix=""):
            try:
                write_metrics(loss_dict, data_time, prefix)
            except FloatingPointError as e:
                losses = {k: float(v.detach().cpu()) for k, v in loss_dict.items()}
                last = self.checkpointer.get_checkpoint_file() if (
                    self.checkpointer.has_checkpoint()) else None
                raise NonFiniteLossError(self.iter, losses, last) from e

        return checked

    def build_hooks(self):
        # DefaultTrainer.__init__ makes its DetectionCheckpointer just before calling this;
        # swapping it here gives the hooks and resume_or_load the atomic one.
        self.checkpointer = AtomicDetectionCheckpointer.from_checkpointer(self.checkpointer)
        return [IterationSeed(self.cfg.SEED)] + super().build_hooks()

    def resume_or_load(self, resume=True):
        """Load ``MODEL.WEIGHTS``, or with ``resume`` the newest complete checkpoint of
        ``OUTPUT_DIR`` and its iteration; start the data where that iteration left it, and
        record the seed and data order. A new classifier first takes its detector from
        ``MODEL.CT_CLASSIFIER.SEGMENTATION_WEIGHTS``."""
        if not (resume and self.checkpointer.has_checkpoint()):
            initialize_from_segmenter(self.model, self.cfg)
        self.checkpointer.resume_or_load(self.cfg.MODEL.WEIGHTS, resume=resume)
        if resume and self.checkpointer.resumed_from:
            # The checkpoint stores the iteration that just finished.
            self.start_iter = self.iter + 1
            final = os.path.join(self.cfg.OUTPUT_DIR, "model_final.pth")
            if self.start_iter >= self.max_iter and self.checkpointer.resumed_from != final:
                # Killed between the last periodic checkpoint and model_final (or model_final
                # is damaged): no iteration is left to run, so write it from the same state.
                logger.warning("Re-saving %s from %s", final, self.checkpointer.resumed_from)
                if comm.is_main_process():
                    self.checkpointer.save("model_final", iteration=self.iter)
        loader = self._trainer.data_loader
        if isinstance(loader, ResumableTrainLoader):
            # The loader is lazy: nothing has been read yet, so the first batch is start_iter's.
            loader.set_start_iter(self.start_iter)
            if comm.is_main_process():
                record = data_order_record(self.cfg, loader, self.cfg.SEED)
                write_data_order(self.cfg.OUTPUT_DIR, record, self.start_iter)

    def state_dict(self):
        # Detectron2 0.6's DefaultTrainer saves the iteration and the hooks (LR scheduler) but
        # not the optimizer, so a resumed run would restart SGD momentum or Adam moments at 0.
        ret = super().state_dict()
        ret["_trainer"] = self._trainer.state_dict()
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if "_trainer" in state_dict:
            self._trainer.load_state_dict(state_dict["_trainer"])
        else:
            logger.warning(
                "The checkpoint has no optimizer state (written by DefaultTrainer?): the "
                "optimizer restarts from zero, so this run cannot match an uninterrupted one"
            )

    def run_step(self):
        try:
            super().run_step()
        except BaseException:
            self._step_failed = True
            raise

    def after_train(self):
        if not self._step_failed:
            return super().after_train()
        # EvalHook.after_train evaluates when the failed step was the last one; after a failed
        # step nothing is evaluated or saved.
        self.storage.iter = self.iter
        for h in self._hooks:
            if isinstance(h, (hooks.EvalHook, hooks.PeriodicCheckpointer, hooks.BestCheckpointer)):
                continue
            h.after_train()

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
            return build_roi_batch_cache_loader(cfg)
        mapper_class = ClassificationDatasetMapper if is_classifier(cfg) else CTLesionDatasetMapper
        return build_resumable_train_loader(cfg, mapper=mapper_class(cfg, True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        mapper_class = ClassificationDatasetMapper if is_classifier(cfg) else CTLesionDatasetMapper
        return build_detection_test_loader(cfg, dataset_name, mapper=mapper_class(cfg, False))

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_ct_optimizer(cfg, model)
