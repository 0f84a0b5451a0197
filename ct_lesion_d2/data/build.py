"""A training data loader that resumes where an interrupted run stopped.

Detectron2's ``build_detection_train_loader`` restarts its seeded index stream when a run is
resumed, and its augmentations draw from the random state of whichever worker maps an image, so a
resumed run trains on other batches than the uninterrupted one. Here batch ``k`` and the
augmentation of each of its images depend only on ``(seed, k)``: the loader can start at any
iteration and give the batches the uninterrupted run would have given there.
"""

import contextlib
import logging
import random

import numpy as np
import torch
import torch.utils.data as torchdata
from detectron2.data import DatasetFromList, get_detection_dataset_dicts
from detectron2.data.build import trivial_batch_collator, worker_init_reset_seed
from detectron2.data.samplers import (
    RandomSubsetTrainingSampler,
    RepeatFactorTrainingSampler,
    TrainingSampler,
)
from detectron2.utils import comm

from .io import DatasetFormatError
from .mappers import CTLesionDatasetMapper
from .samplers import ResumableBatchSampler, aspect_ratio_buckets

logger = logging.getLogger(__name__)

# Keys of the seed sequences, so that data and model streams never share a seed.
_MAP_STREAM, _RETRY_STREAM = 1, 2


def derived_seed(*keys):
    """A 32-bit seed derived from integer ``keys`` with ``numpy.random.SeedSequence``."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0])


@contextlib.contextmanager
def seeded_global_rng(seed):
    """Seed Python's, NumPy's and torch's (CPU) global generators inside the block, and give
    them back their previous states after it, so the caller's random streams are unchanged."""
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


class SeededMapDataset(torchdata.Dataset):
    """Map ``(position, index)`` keys of ``ResumableBatchSampler`` to training inputs.

    Each image is mapped with the global generators seeded from ``(seed, rank, position)``, so its
    random augmentations are the same whatever the worker, the number of workers or the
    iteration a run was resumed at. A mapper that returns None (an image to skip) is retried on
    an index drawn from the same key, as Detectron2's ``MapDataset`` does with a shared generator.
    Errors other than ``DatasetFormatError`` are re-raised as one that names the file.
    """

    def __init__(self, dataset, mapper, seed, max_retries=10):
        self._dataset = dataset
        self._map = mapper
        self._seed = int(seed)
        self._rank = comm.get_rank()
        self._max_retries = max_retries

    def __len__(self):
        return len(self._dataset)

    def __getitem__(self, key):
        position, index = key
        for attempt in range(self._max_retries + 1):
            record = self._dataset[index]
            with seeded_global_rng(
                derived_seed(self._seed, _MAP_STREAM, self._rank, position, attempt)
            ):
                mapped = self._map_one(record)
            if mapped is not None:
                return mapped
            retry = np.random.default_rng(
                derived_seed(self._seed, _RETRY_STREAM, self._rank, position, attempt)
            )
            index = int(retry.integers(len(self._dataset)))
        raise RuntimeError(
            f"the mapper skipped {self._max_retries + 1} images in a row at stream position "
            f"{position}; check the dataset (tools/validate_dataset.py)"
        )

    def _map_one(self, record):
        try:
            return self._map(record)
        except DatasetFormatError:
            raise
        except Exception as e:
            raise DatasetFormatError(
                record.get("file_name", "<no file_name>"),
                f"cannot be prepared for training ({type(e).__name__}: {e})",
            ) from e


class ResumableTrainLoader:
    """Iterable of training batches (lists of mapped dicts) that starts at ``start_iter``.

    Iterating is lazy: the DataLoader (and its workers) starts at the first ``next``, so calling
    ``set_start_iter`` after the trainer is built but before training costs nothing.
    """

    def __init__(self, dataset, batch_sampler, *, num_workers=0, seed):
        self.batch_sampler = batch_sampler
        self.seed = int(seed)
        self.data_loader = torchdata.DataLoader(
            dataset,
            batch_sampler=batch_sampler,
            num_workers=num_workers,
            collate_fn=trivial_batch_collator,
            worker_init_fn=worker_init_reset_seed,
            # Starting an iteration over a DataLoader draws its workers' base seed from this
            # generator, or else from the global one, which would shift the model's draws.
            generator=torch.Generator().manual_seed(self.seed),
        )

    def set_start_iter(self, start_iter):
        """Make the next iteration over the loader start at batch ``start_iter``."""
        self.batch_sampler.start_iter = int(start_iter)

    def __iter__(self):
        yield from self.data_loader


def build_index_sampler(cfg, dataset_dicts, seed, repeat_factors=None):
    """Detectron2's training sampler named by ``DATALOADER.SAMPLER_TRAIN``, seeded with ``seed``.

    Args:
        repeat_factors (list[float] or None): per-record repeat factors (from
            ``DATALOADER.CT_DATASET_REPEAT``); a ``TrainingSampler`` then becomes Detectron2's
            ``RepeatFactorTrainingSampler`` over them.
    """
    name = cfg.DATALOADER.SAMPLER_TRAIN
    logger.info("Using training sampler %s (seed %d)", name, seed)
    if repeat_factors is not None:
        if name != "TrainingSampler":
            raise ValueError(
                f"DATALOADER.CT_DATASET_REPEAT needs DATALOADER.SAMPLER_TRAIN TrainingSampler, "
                f"not {name}"
            )
        return RepeatFactorTrainingSampler(torch.tensor(repeat_factors), seed=seed)
    if name == "TrainingSampler":
        return TrainingSampler(len(dataset_dicts), seed=seed)
    if name == "RepeatFactorTrainingSampler":
        factors = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(
            dataset_dicts, cfg.DATALOADER.REPEAT_THRESHOLD
        )
        return RepeatFactorTrainingSampler(factors, seed=seed)
    if name == "RandomSubsetTrainingSampler":
        return RandomSubsetTrainingSampler(
            len(dataset_dicts),
            cfg.DATALOADER.RANDOM_SUBSET_RATIO,
            seed_shuffle=seed,
            seed_subset=seed,
        )
    raise ValueError(f"Unknown training sampler: {name}")


def load_train_dicts(cfg):
    """The records of ``DATASETS.TRAIN`` (filtered as ``build_detection_train_loader`` does) and
    their repeat factors from ``DATALOADER.CT_DATASET_REPEAT``.

    Returns:
        tuple[list[dict], list[float] or None]: records, and one factor per record (None when
        ``CT_DATASET_REPEAT`` is empty).

    Raises:
        ValueError: ``CT_DATASET_REPEAT`` does not give one positive factor per training set.
    """
    names, factors = list(cfg.DATASETS.TRAIN), list(cfg.DATALOADER.CT_DATASET_REPEAT)
    kwargs = dict(
        filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
        min_keypoints=(
            cfg.MODEL.ROI_KEYPOINT_HEAD.MIN_KEYPOINTS_PER_IMAGE if cfg.MODEL.KEYPOINT_ON else 0
        ),
    )
    if not factors:
        proposals = cfg.DATASETS.PROPOSAL_FILES_TRAIN if cfg.MODEL.LOAD_PROPOSALS else None
        return get_detection_dataset_dicts(names, proposal_files=proposals, **kwargs), None
    if len(factors) != len(names) or min(factors) <= 0:
        raise ValueError(
            f"DATALOADER.CT_DATASET_REPEAT {tuple(factors)} must give one positive factor per "
            f"name of DATASETS.TRAIN {tuple(names)}"
        )
    dataset, repeat = [], []
    for name, factor in zip(names, factors):
        dicts = get_detection_dataset_dicts([name], **kwargs)
        logger.info("%s: %d training records, repeat factor %.2f", name, len(dicts), factor)
        dataset.extend(dicts)
        repeat.extend([float(factor)] * len(dicts))
    return dataset, repeat


def build_resumable_train_loader(
    cfg, mapper=None, seed=None, *, dataset=None, aspect_ratio_grouping=None, num_workers=None
):
    """The training loader of ``cfg`` (datasets, filters, sampler, batch size, grouping and
    workers as in ``build_detection_train_loader``) built from the pieces above.

    Args:
        mapper (callable or None): dataset dict -> model input; default
            ``CTLesionDatasetMapper``.
        seed (int or None): seed of the data order and augmentations; None takes ``cfg.SEED``,
            or a random seed shared by all processes when that is negative.
        dataset (list[dict] or None): records to use instead of ``DATASETS.TRAIN``.
        aspect_ratio_grouping, num_workers: override ``DATALOADER.ASPECT_RATIO_GROUPING`` and
            ``DATALOADER.NUM_WORKERS``.

    Returns:
        ResumableTrainLoader: with ``dataset_dicts`` and ``batch_sampler`` attributes.
    """
    repeat_factors = None
    if dataset is None:
        dataset, repeat_factors = load_train_dicts(cfg)
    if seed is None:
        seed = cfg.SEED if cfg.SEED >= 0 else comm.shared_random_seed()
    if aspect_ratio_grouping is None:
        aspect_ratio_grouping = cfg.DATALOADER.ASPECT_RATIO_GROUPING
    if num_workers is None:
        num_workers = cfg.DATALOADER.NUM_WORKERS
    world_size = comm.get_world_size()
    if cfg.SOLVER.IMS_PER_BATCH % world_size:
        raise ValueError(
            f"SOLVER.IMS_PER_BATCH={cfg.SOLVER.IMS_PER_BATCH} is not divisible by the "
            f"{world_size} processes"
        )
    batch_sampler = ResumableBatchSampler(
        build_index_sampler(cfg, dataset, seed, repeat_factors),
        cfg.SOLVER.IMS_PER_BATCH // world_size,
        buckets=aspect_ratio_buckets(dataset) if aspect_ratio_grouping else None,
    )
    mapped = SeededMapDataset(
        DatasetFromList(dataset, copy=False),
        mapper if mapper is not None else CTLesionDatasetMapper(cfg, True),
        seed,
    )
    loader = ResumableTrainLoader(mapped, batch_sampler, num_workers=num_workers, seed=seed)
    loader.dataset_dicts = dataset
    return loader
