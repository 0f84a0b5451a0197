"""Cached ranked RoI batches: train module S of ``CTMaskNetClassifier`` without the detector.

With the backbone BatchNorm affine parameters frozen (``MODEL.CT_CLASSIFIER.TRAIN_BN_AFFINE``
False) nothing before module S changes during training, so each training image's ranked RoI
batch is the same at every epoch. :func:`compute_roi_batch_records` runs the detector once per
image; the records then replace the images in the training loader
(``MODEL.CT_CLASSIFIER.CACHE_ROI_BATCHES``) and each iteration costs one pass through S.

The rows are computed by the trainer's own model, with the weights it trains from, the first
time the loader is read (:class:`RoIBatchCache`): no second model is built. The cache holds the
slice features of the classifier's options too, and with ``CACHE_AUGMENTED_VIEWS`` N it holds
N augmented views of each slice (the training mapper's flips, rotations and intensity changes,
:class:`AugmentedViews`) beside the unaugmented one. The image branch
(``MODEL.CT_CLASSIFIER.IMAGE_BRANCH``) trains, so it cannot be cached: with it the loader adds
the training mapper's image of the record (augmented anew at every read) to the cached rows.
"""

import logging
import zlib

import numpy as np
import torch
from detectron2.data import get_detection_dataset_dicts
from detectron2.utils import comm
from tqdm import tqdm

from ...data.build import build_resumable_train_loader
from ...data.mappers import ClassificationDatasetMapper
from ...utils import unwrap_model

__all__ = [
    "AugmentedViews",
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
        list[dict]: one per record, in the order of ``dataset_dicts``, with ``roi_rows`` (B, W)
        float32 CPU tensor, ``slice_features`` (D,) when the model has a slice-feature option,
        ``class_id``, ``file_name`` and ``image_id``.
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
                batches, _, slice_features = model.detect_s_inputs(inputs)
                for j, (i, x, batch) in enumerate(zip(chunk, inputs, batches)):
                    computed[i] = {
                        "roi_rows": batch.rows.float().cpu(),
                        "class_id": x["class_id"],
                        "file_name": x["file_name"],
                        "image_id": x["image_id"],
                    }
                    if slice_features is not None:
                        computed[i]["slice_features"] = slice_features[j].float().cpu()
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

    def __init__(self, dataset_dicts, mapper, batch_size, image_mapper=None):
        """
        Args:
            dataset_dicts (list[dict]): the training records, in loader order.
            mapper (callable): the inference ``ClassificationDatasetMapper``.
            batch_size (int): images per detector forward.
            image_mapper (callable or None): record -> input whose ``"image"`` is added to each
                cached record at every read (the image branch's training mapper).
        """
        self.dataset_dicts = dataset_dicts
        self.mapper = mapper
        self.batch_size = batch_size
        self.image_mapper = image_mapper
        self.model = None
        self._records = None

    def bind(self, model):
        """Use ``model`` (a ``CTMaskNetClassifier``, DDP-wrapped or not) to compute the rows."""
        self.model = unwrap_model(model)

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
        cached = self._records[record["roi_cache_index"]]
        if self.image_mapper is None:
            return cached
        return dict(cached, image=self.image_mapper(record)["image"])


class AugmentedViews:
    """The mapper of a cache with augmented views: view 0 of a record is the inference mapper's
    input, views 1..N the training mapper's, each drawn with its own seed.

    The seed of a view depends only on (seed, file name, view), so the cache is the same
    whatever the order it is computed in; the global NumPy state is restored after each draw.
    """

    def __init__(self, inference_mapper, training_mapper, seed):
        self.inference_mapper = inference_mapper
        self.training_mapper = training_mapper
        self.seed = seed

    @staticmethod
    def expand(dataset_dicts, num_views):
        """Each record once unaugmented (``roi_cache_view`` 0), then ``num_views`` times more."""
        return [dict(d, roi_cache_view=v) for v in range(num_views + 1) for d in dataset_dicts]

    def __call__(self, record):
        view = record.get("roi_cache_view", 0)
        if view == 0:
            return dict(self.inference_mapper(record), roi_cache_view=0)
        key = f"{self.seed}:{record['file_name']}:{view}".encode()
        state = np.random.get_state()
        np.random.seed(zlib.crc32(key))
        try:
            return dict(self.training_mapper(record), roi_cache_view=view)
        finally:
            np.random.set_state(state)


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
    views = cfg.MODEL.CT_CLASSIFIER.CACHE_AUGMENTED_VIEWS
    if cfg.INPUT.RANDOM_FLIP != "none" and not views:
        logger.warning(
            "CACHE_ROI_BATCHES: the RoI batches are computed once without augmentation, "
            "so INPUT.RANDOM_FLIP=%s is not applied",
            cfg.INPUT.RANDOM_FLIP,
        )
    dataset_dicts = get_detection_dataset_dicts(cfg.DATASETS.TRAIN, filter_empty=False)
    mapper = ClassificationDatasetMapper(cfg, False)
    if views:
        augmented = AugmentedViews(mapper, ClassificationDatasetMapper(cfg, True), max(cfg.SEED, 0))
        dataset_dicts, mapper = augmented.expand(dataset_dicts, views), augmented
    image_mapper = None
    if cfg.MODEL.CT_CLASSIFIER.IMAGE_BRANCH:
        image_mapper = ClassificationDatasetMapper(cfg, True)
    cache = RoIBatchCache(dataset_dicts, mapper, cfg.SOLVER.IMS_PER_BATCH, image_mapper)
    loader = build_resumable_train_loader(
        cfg,
        mapper=cache,
        dataset=cache.loader_records(),
        aspect_ratio_grouping=False,
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
