"""Detectron2's ``DefaultTrainer`` with the project's evaluators, mappers and optimizer, and a
training loop that resumes bit for bit after a kill and stops cleanly on a non-finite loss.

Everything goes through ``DefaultTrainer``'s public seams: the ``build_*`` classmethods,
``build_hooks``, ``resume_or_load``, ``state_dict`` and the checkpointer's ``path_manager``;
where the official Detectron2 and pb1-detectron2 0.6 differ, ``ct_lesion_d2.utils.compat`` says
so.
"""

import logging
import os
from collections import OrderedDict

from detectron2.data import MetadataCatalog, build_detection_test_loader
from detectron2.engine import DefaultTrainer, hooks
from detectron2.modeling import GeneralizedRCNNWithTTA
from detectron2.utils import comm

from ..data.build import ResumableTrainLoader, build_resumable_train_loader
from ..data.mappers import ClassificationDatasetMapper, CTLesionDatasetMapper
from ..evaluation import CTClassificationEvaluator, build_lesion_evaluators
from ..modeling.meta_arch.roi_batch_cache import (
    bind_roi_batch_cache,
    build_roi_batch_cache_loader,
)
from ..modeling.meta_arch.segmentation_weights import initialize_from_segmenter
from ..solver import build_ct_optimizer
from ..utils import compat
from .checkpoint import make_atomic, resume_or_load
from .data_order import data_order_record, recorded_seed, write_data_order
from .hooks import IterationSeed, NonFiniteLossCheck, UnlessFailed, WeightAverage

logger = logging.getLogger(__name__)

CLASSIFIER_META_ARCHITECTURES = ("CTMaskNetClassifier",)


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
                cfg.MODEL.CT_CLASSIFIER.NUM_CLASSES,
                cfg.DATASETS.TRAIN[0],
                len(classes),
                list(classes),
                len(classes),
            )
            cfg.MODEL.CT_CLASSIFIER.NUM_CLASSES = len(classes)
    return cfg


_TASKS = ("bbox", "segm", "lesion", "classification")
# with TEST.AUG.ENABLED and one test dataset, test_with_TTA's results are "<task>_TTA"
EVAL_TASKS = _TASKS + tuple(task + "_TTA" for task in _TASKS)


def check_test_time_augmentation(cfg):
    """Refuse ``TEST.AUG.ENABLED`` for a classifier (``GeneralizedRCNNWithTTA`` wraps a
    segmenter), before any training or evaluation is spent."""
    if cfg.TEST.AUG.ENABLED and is_classifier(cfg):
        raise ValueError(
            f"TEST.AUG.ENABLED: test-time augmentation is for the lesion segmenter, not "
            f"{cfg.MODEL.META_ARCHITECTURE}; set TEST.AUG.ENABLED False"
        )


def nest_eval_results(flat, tasks=EVAL_TASKS):
    """Undo Detectron2's ``flatten_results_dict`` for the evaluation tasks.

    Args:
        flat (dict): ``{"segm/AP50": v}`` for one test dataset, ``{"<dataset>/segm/AP50": v}``
            for several (``DefaultTrainer.test``'s layouts, flattened); other keys ("lr",
            "total_loss", ...) are left out.
        tasks (tuple[str]): the task names to keep (the evaluators' result keys).

    Returns:
        dict: ``{task: {metric: value}}``, or ``{dataset: {task: {metric: value}}}``.
    """
    results = {}
    for key, value in flat.items():
        parts = key.split("/")
        at = next((i for i, part in enumerate(parts[:-1]) if part in tasks), None)
        if at is None:
            continue
        node = results.setdefault("/".join(parts[:at]), {}) if at else results
        node.setdefault(parts[at], {})["/".join(parts[at + 1 :])] = value
    return results


def weight_average_start(cfg):
    """The first iteration averaged by ``SOLVER.SWA`` (``START`` of ``SOLVER.MAX_ITER``).

    Raises:
        ValueError: ``SOLVER.SWA.START`` is not in [0, 1).
    """
    start = cfg.SOLVER.SWA.START
    if not 0.0 <= start < 1.0:
        raise ValueError(
            f"SOLVER.SWA.START is {start}: the fraction of SOLVER.MAX_ITER after which the "
            "weights are averaged must be in [0, 1), e.g. 0.75"
        )
    return int(start * cfg.SOLVER.MAX_ITER)


class CTLesionTrainer(DefaultTrainer):
    """``DefaultTrainer`` for both model kinds.

    Lesion segmenters get ``CTLesionDatasetMapper`` (Detectron2's mapper reading PNG/JPG with
    the project's checked reader, and DICOM and NIfTI slices windowed per ``INPUT.CT_WINDOW``)
    and ``COCOEvaluator`` (bbox, segm; its fast C++ AP where ``detectron2._C`` is compiled);
    classifiers get ``ClassificationDatasetMapper`` and ``CTClassificationEvaluator``. Adam is
    available through ``SOLVER.CT_OPTIMIZER``.

    Faults: checkpoints are written atomically (``make_atomic``: the checkpointer's
    ``path_manager``) and ``resume_or_load(resume=True)`` resumes from the newest complete one;
    the batches, augmentations and random draws of iteration ``k`` depend only on ``(SEED, k)``
    (``build_resumable_train_loader``, ``IterationSeed``), so a resumed run reaches the weights of
    the uninterrupted one. The seed and the data order are written to
    ``OUTPUT_DIR/data_order.json``. A non-finite loss raises ``NonFiniteLossError`` before the
    optimizer step (``NonFiniteLossCheck``), and no checkpoint or evaluation follows it. With
    ``SOLVER.SWA.ENABLED`` the final model is the mean of the last iterates (``WeightAverage``).

    Attributes:
        resumed_from (str or None): the checkpoint ``resume_or_load`` resumed from.
    """

    def __init__(self, cfg):
        cfg = resolve_seed(cfg)
        with compat.cpu_ddp():
            super().__init__(cfg)
        make_atomic(self.checkpointer)
        # CACHE_ROI_BATCHES: the cached rows are computed by this model, on the first batch
        bind_roi_batch_cache(self.data_loader, self.model)
        self.resumed_from = None

    def build_hooks(self):
        ret = [IterationSeed(self.cfg.SEED), NonFiniteLossCheck(self.checkpointer)]
        if self.cfg.SOLVER.SWA.ENABLED:
            # First: it copies the model before NonFiniteLossCheck hooks into its forward, and
            # the checkpointer and the evaluation after the last step must see the average
            ret.insert(0, WeightAverage(weight_average_start(self.cfg)))
        for hook in super().build_hooks():
            ret.append(UnlessFailed(hook) if isinstance(hook, hooks.EvalHook) else hook)
        check_test_time_augmentation(self.cfg)
        if self.cfg.TEST.AUG.ENABLED:
            # After the plain evaluation of the final model, as Detectron2's own train_net does
            tta = hooks.EvalHook(0, lambda: self.test_with_TTA(self.cfg, self.model))
            ret.append(UnlessFailed(tta))
        return ret

    def resume_or_load(self, resume=True):
        """Load ``MODEL.WEIGHTS``, or with ``resume`` the newest complete checkpoint of
        ``OUTPUT_DIR`` and its iteration; start the data where that iteration left it, and
        record the seed and data order. A new classifier first takes its detector from
        ``MODEL.CT_CLASSIFIER.SEGMENTATION_WEIGHTS``."""
        if not (resume and self.checkpointer.has_checkpoint()):
            initialize_from_segmenter(self.model, self.cfg)
        self.resumed_from = resume_or_load(self.checkpointer, self.cfg.MODEL.WEIGHTS, resume=resume)
        if self.resumed_from:
            # The checkpoint stores the iteration that just finished.
            self.start_iter = self.iter + 1
            final = os.path.join(self.cfg.OUTPUT_DIR, "model_final.pth")
            if self.start_iter >= self.max_iter and self.resumed_from != final:
                # Killed between the last periodic checkpoint and model_final (or model_final
                # is damaged): no iteration is left to run, so write it from the same state.
                logger.warning("Re-saving %s from %s", final, self.resumed_from)
                if comm.is_main_process():
                    self.checkpointer.save("model_final", iteration=self.iter)
        loader = self.data_loader
        if isinstance(loader, ResumableTrainLoader):
            # The loader is lazy: nothing has been read yet, so the first batch is start_iter's.
            loader.set_start_iter(self.start_iter)
            if comm.is_main_process():
                record = data_order_record(self.cfg, loader, self.cfg.SEED)
                write_data_order(self.cfg.OUTPUT_DIR, record, self.start_iter)

    def state_dict(self):
        ret = super().state_dict()
        if not compat.TRAINER_SAVES_OPTIMIZER:
            # The layout of the official DefaultTrainer (difference 2 of utils/compat.py).
            ret["_trainer"] = {"iteration": self.iter, "optimizer": self.optimizer.state_dict()}
        return ret

    def load_state_dict(self, state_dict):
        if "_trainer" not in state_dict:
            logger.warning(
                "The checkpoint has no optimizer state (written by DefaultTrainer of 0.6?): the "
                "optimizer restarts from zero, so this run cannot match an uninterrupted one"
            )
            own = {"iteration": state_dict["iteration"], "optimizer": self.optimizer.state_dict()}
            state_dict = dict(state_dict, _trainer=own)
        super().load_state_dict(state_dict)
        if not compat.TRAINER_SAVES_OPTIMIZER:
            self.optimizer.load_state_dict(state_dict["_trainer"]["optimizer"])

    def eval_results(self, tasks=EVAL_TASKS):
        """The results of the last evaluation during training, as ``EvalHook`` put them into
        the ``EventStorage``, in the layout ``DefaultTrainer.test`` returns them
        (``nest_eval_results``)."""
        flat = {key: value for key, (value, _) in self.storage.latest().items()}
        return nest_eval_results(flat, tasks)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", "coco")
        if evaluator_type == "ct_classification":
            return CTClassificationEvaluator(dataset_name, output_dir=output_folder)
        # COCOEvaluator (bbox, segm) and the lesion Dice / detection rates beside it
        return build_lesion_evaluators(cfg, dataset_name, output_folder)

    @classmethod
    def test_with_TTA(cls, cfg, model):
        """Evaluate ``model`` with Detectron2's test-time augmentation, ``GeneralizedRCNNWithTTA``:
        each slice at every shorter side of ``TEST.AUG.MIN_SIZES`` (at most
        ``TEST.AUG.MAX_SIZE``), and mirrored left-right with ``TEST.AUG.FLIP``; the boxes of all
        views are merged by NMS and the mask probabilities of the kept boxes averaged over the
        views. The evaluators write to ``OUTPUT_DIR/inference_TTA/<dataset>``.

        Returns:
            dict: ``DefaultTrainer.test``'s results with ``_TTA`` after each key.

        Raises:
            ValueError: ``cfg`` builds a classifier, which has no test-time augmentation.
        """
        check_test_time_augmentation(cfg)
        logger.info(
            "Test-time augmentation: shorter side %s, flip %s",
            list(cfg.TEST.AUG.MIN_SIZES),
            cfg.TEST.AUG.FLIP,
        )
        evaluators = [
            cls.build_evaluator(
                cfg, name, output_folder=os.path.join(cfg.OUTPUT_DIR, "inference_TTA", name)
            )
            for name in cfg.DATASETS.TEST
        ]
        results = cls.test(cfg, GeneralizedRCNNWithTTA(cfg, model), evaluators)
        return OrderedDict((key + "_TTA", value) for key, value in results.items())

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
