"""Cached ranked RoI batches: train module S of ``CTMaskNetClassifier`` without the detector.

With the backbone BatchNorm affine parameters frozen (``MODEL.CT_CLASSIFIER.TRAIN_BN_AFFINE``
False) nothing before module S changes during training, so each training image's ranked RoI
batch is the same at every epoch. :func:`compute_roi_batch_records` runs the detector once per
image; the records then replace the images in the training loader
(``MODEL.CT_CLASSIFIER.CACHE_ROI_BATCHES``) and each iteration costs one pass through S.
"""
import logging

import torch
from detectron2.utils import comm
from tqdm import tqdm

__all__ = ["compute_roi_batch_records"]

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
