"""The seed and the order of the training images, recorded in ``OUTPUT_DIR/data_order.json``.

The record lets a run be audited and reproduced: which images each iteration trained on (on
process 0), with which seed. A resumed run checks its order against the record and says so in
the log when it differs (another dataset, seed or batch size), since it then cannot reproduce
the uninterrupted run.
"""

import json
import logging
import os

from ..utils.files import write_json_atomic

logger = logging.getLogger(__name__)

DATA_ORDER_FILE = "data_order.json"


def _read_record(path):
    """The record in ``path``, or None when it is missing or not JSON."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def recorded_seed(output_dir):
    """The seed recorded in ``output_dir/data_order.json``, or None."""
    try:
        return int(_read_record(os.path.join(output_dir, DATA_ORDER_FILE))["seed"])
    except (ValueError, KeyError, TypeError):
        return None


def data_order_record(cfg, loader, seed):
    """The record of the training order of ``cfg`` with ``loader`` (a ``ResumableTrainLoader``).

    Returns:
        dict: ``seed``, ``sampler``, ``datasets``, ``ims_per_batch`` (per process),
        ``world_size``, ``aspect_ratio_grouping``, ``file_names`` (the dataset, after filtering)
        and ``batches``: for each iteration ``0 .. SOLVER.MAX_ITER - 1`` the dataset indices of
        process 0's batch.
    """
    sampler = loader.batch_sampler
    batches = sampler.batches(0, cfg.SOLVER.MAX_ITER)
    return {
        "seed": int(seed),
        "sampler": cfg.DATALOADER.SAMPLER_TRAIN,
        "datasets": list(cfg.DATASETS.TRAIN),
        "ims_per_batch": sampler.batch_size,
        "world_size": cfg.SOLVER.IMS_PER_BATCH // sampler.batch_size,
        "aspect_ratio_grouping": bool(cfg.DATALOADER.ASPECT_RATIO_GROUPING),
        "file_names": [d.get("file_name") for d in loader.dataset_dicts],
        "batches": [[index for _, index in batch] for batch in batches],
    }


def write_data_order(output_dir, record, start_iter=0):
    """Write ``record`` to ``output_dir/data_order.json`` (atomically) and log its first batches.

    When the folder holds a different record (a run resumed on another dataset, seed or batch
    size), the log says that the resumed run will not reproduce the earlier one, and the earlier
    record is kept as ``data_order.previous-<n>.json``.

    Returns:
        str: the path written.
    """
    path = os.path.join(output_dir, DATA_ORDER_FILE)
    if os.path.isfile(path):
        previous = _read_record(path)
        if previous == record:
            logger.info("Data order (seed %d) matches %s", record["seed"], path)
            return path
        n = 1
        while os.path.exists(os.path.join(output_dir, f"data_order.previous-{n}.json")):
            n += 1
        kept = os.path.join(output_dir, f"data_order.previous-{n}.json")
        os.replace(path, kept)
        logger.warning(
            "The data order differs from the one recorded in %s (kept as %s): %s",
            path,
            kept,
            (
                "this run, starting at iteration %d, will not reproduce the run that wrote it"
                % start_iter
                if start_iter
                else "a new run in a used folder"
            ),
        )
    write_json_atomic(record, path, overwrite=True)
    names = record["file_names"]
    shown = [
        f"{i}: {[os.path.basename(names[k]) for k in batch]}"
        for i, batch in enumerate(record["batches"][start_iter : start_iter + 3], start=start_iter)
    ]
    logger.info(
        "Seed %d; data order of %d iterations written to %s; from iteration %d: %s",
        record["seed"],
        len(record["batches"]),
        path,
        start_iter,
        "; ".join(shown),
    )
    return path
