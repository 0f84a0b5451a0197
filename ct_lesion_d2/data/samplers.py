"""A batch sampler whose batches depend only on the seed and the iteration, so training resumes
on the same data it would have seen without the interruption."""

import itertools

import numpy as np
from torch.utils.data.sampler import Sampler


class ResumableBatchSampler(Sampler):
    """Group the index stream of a seeded Detectron2 training sampler into batches, starting at
    any iteration.

    Detectron2's ``TrainingSampler`` (and ``RepeatFactorTrainingSampler``, ...) yields an infinite,
    seeded stream of dataset indices, but a resumed run restarts that stream at its beginning.
    Here the stream is batched at the index level, so batch ``k`` is a pure function of the
    sampler's seed and ``k``: ``start_iter`` skips the batches of the iterations already trained
    (indices only, no image is read). Aspect-ratio grouping follows ``AspectRatioGroupedDataset``
    (one bucket for ``width > height``, one for the rest), decided from the dataset dicts instead
    of the mapped images.

    Each batch element is ``(position, index)``: ``position`` counts the elements of this
    process's stream, and seeds the augmentations of that element (``SeededMapDataset``).
    """

    def __init__(self, sampler, batch_size, *, buckets=None, start_iter=0):
        """
        Args:
            sampler (Sampler): an infinite, seeded index sampler whose ``__iter__`` restarts the
                same stream on every call (true of Detectron2's training samplers).
            batch_size (int): images per batch on this process.
            buckets (Sequence[int] or None): bucket id of each dataset index (see
                ``aspect_ratio_buckets``); None puts every image in one bucket.
            start_iter (int): the first iteration to yield.
        """
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.sampler = sampler
        self.batch_size = int(batch_size)
        self.buckets = None if buckets is None else np.asarray(buckets, dtype=np.int64)
        self.start_iter = int(start_iter)

    def _all_batches(self):
        pending = {}
        for position, index in enumerate(self.sampler):
            bucket = 0 if self.buckets is None else int(self.buckets[index])
            group = pending.setdefault(bucket, [])
            group.append((position, int(index)))
            if len(group) == self.batch_size:
                yield list(group)
                group.clear()

    def __iter__(self):
        return itertools.islice(self._all_batches(), self.start_iter, None)

    def batches(self, start_iter, num_iters):
        """The ``(position, index)`` batches of iterations ``[start_iter, start_iter + num_iters)``.

        Returns:
            list[list[tuple[int, int]]]
        """
        return list(itertools.islice(self._all_batches(), start_iter, start_iter + num_iters))


def aspect_ratio_buckets(dataset_dicts):
    """Bucket id of each record: 0 for ``width > height``, 1 otherwise, as Detectron2's
    ``AspectRatioGroupedDataset``; records without a size go to bucket 1.

    Returns:
        list[int]
    """
    return [
        (
            0
            if d.get("width") is not None
            and d.get("height") is not None
            and d["width"] > d["height"]
            else 1
        )
        for d in dataset_dicts
    ]
