"""Cached ranked RoI batches: train module S of ``CTMaskNetClassifier`` without the detector.

With the backbone BatchNorm affine parameters frozen (``MODEL.CT_CLASSIFIER.TRAIN_BN_AFFINE``
False) nothing before module S changes during training, so each training image's ranked RoI
batch is the same at every epoch. :func:`compute_roi_batch_records` runs the detector once per
image; the records then replace the images in the training loader
(``MODEL.CT_CLASSIFIER.CACHE_ROI_BATCHES``) and each iteration costs one pass through S.

The rows are computed by the trainer's own model, with the weights it trains from, the first
time the loader is read (:class:`RoIBatchCache`): no second model is built.
"""
import logging

import torch
from detectron2.data import get_detection_dataset_dicts
from detectron2.utils import comm
from torch.nn.parallel import DataParallel, DistributedDataParallel
from tqdm import tqdm

from ...data.build import build_resumable_train_loader
from ...data.mappers import ClassificationDatasetMapper

__all__ = [
    "RoIBatchCache",
    "bind_roi_batch_cache",
    "build_roi_batch_cache_loader",
    "compute_roi_batch_records",
]

logger = logging.getLogger(__name__)


@torch.no_grad()
def compute_roi_batch_records(model, dataset_dicts, mapper, batch_size=8):
    """The ranked RoI rows of every record, computed once with the detector of ``model``.

    In a distributed run each process computes every ``world_size``-th record and all processes
    receive the complete list.

    Args:
        model (CTMaskNetClassifier): the classifier whose (frozen) detector ranks the RoIs.
        dataset_dicts (list[dict]): classification records (``file_name``, ``class_id``).
        mapper (callable): record -> model input (the inference ``ClassificationDatasetMapper``,
            so that no random augmentation is frozen into the cache).
        batch_size (int): images per detector forward.

    Returns:
        list[dict]: one per record, in the order of ``dataset_dicts``, with ``roi_rows`` (B, 5)
        float32 CPU tensor, ``class_id``, ``file_name`` and ``image_id``.
    """
    rank, world_size = comm.get_rank(), comm.get_world_size()
    indices = list(range(rank, len(dataset_dicts), world_size))
    was_training = model.training
    model.eval()
    computed = {}
    try:
        with tqdm(
            total=len(indices), desc="RoI batches", unit="image", disable=not comm.is_main_process()
        ) as progress:
            for start in range(0, len(indices), batch_size):
                chunk = indices[start : start + batch_size]
                inputs = [mapper(dataset_dicts[i]) for i in chunk]
                batches, _ = model.detect_roi_batches(inputs)
                for i, x, batch in zip(chunk, inputs, batches):
                    computed[i] = {
                        "roi_rows": batch.rows.float().cpu(),
                        "class_id": x["class_id"],
                        "file_name": x["file_name"],
                        "image_id": x["image_id"],
                    }
                progress.update(len(chunk))
    finally:
        model.train(was_training)
    if world_size > 1:
        for part in comm.all_gather(computed):
            computed.update(part)
    logger.info(f"Computed the ranked RoI batches of {len(computed)} training images")
    return [computed[i] for i in range(len(dataset_dicts))]


class RoIBatchCache:
    """The training mapper of ``CACHE_ROI_BATCHES``: a record's precomputed ranked RoI rows.

    The rows of every record are computed on the first call, with the model given to
    :meth:`bind` (the trainer's, after its weights are loaded), and kept for the whole run.
    """

    def __init__(self, dataset_dicts, mapper, batch_size):
        """
        Args:
            dataset_dicts (list[dict]): the training records, in loader order.
            mapper (callable): the inference ``ClassificationDatasetMapper``.
            batch_size (int): images per detector forward.
        """
        self.dataset_dicts = dataset_dicts
        self.mapper = mapper
        self.batch_size = batch_size
        self.model = None
        self._records = None

    def bind(self, model):
        """Use ``model`` (a ``CTMaskNetClassifier``, DDP-wrapped or not) to compute the rows."""
        if isinstance(model, (DistributedDataParallel, DataParallel)):
            model = model.module
        self.model = model

    def loader_records(self):
        """The records handed to the loader: each knows its place in the cache."""
        return [dict(d, roi_cache_index=i) for i, d in enumerate(self.dataset_dicts)]

    def __call__(self, record):
        if self._records is None:
            if self.model is None:
                raise RuntimeError(
                    "the RoI-batch cache has no model: bind_roi_batch_cache(loader, model) "
                    "before reading the loader (CTLesionTrainer does)"
                )
            self._records = compute_roi_batch_records(
                self.model, self.dataset_dicts, self.mapper, self.batch_size
            )
        return self._records[record["roi_cache_index"]]


def build_roi_batch_cache_loader(cfg):
    """Training loader of precomputed ranked RoI batches (``CACHE_ROI_BATCHES``).

    Nothing runs yet: the rows are computed on the first batch, by the model bound with
    :func:`bind_roi_batch_cache`, on the inference mapper's input of each training image.

    Raises:
        ValueError: ``TRAIN_BN_AFFINE`` is on (the RoI batches would change while training).
    """
    if cfg.MODEL.CT_CLASSIFIER.TRAIN_BN_AFFINE:
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
    dataset_dicts = get_detection_dataset_dicts(cfg.DATASETS.TRAIN, filter_empty=False)
    cache = RoIBatchCache(
        dataset_dicts, ClassificationDatasetMapper(cfg, False), cfg.SOLVER.IMS_PER_BATCH
    )
    loader = build_resumable_train_loader(
        cfg, mapper=cache, dataset=cache.loader_records(), aspect_ratio_grouping=False,
        num_workers=0,
    )
    loader.roi_batch_cache = cache
    return loader


def bind_roi_batch_cache(loader, model):
    """Give a cached loader's :class:`RoIBatchCache` the model to compute its rows with.

    A loader without a cache is left alone, so the trainer can call this for any model.
    """
    cache = getattr(loader, "roi_batch_cache", None)
    if cache is not None:
        cache.bind(model)
