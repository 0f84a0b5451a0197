"""Runs in several processes through Detectron2's ``launch``, for ``tests/test_launch.py``.

    python tests/distributed_runs.py losses NUM_PROCS OUT.json KEY VALUE ...
    python tests/distributed_runs.py roi-cache NUM_PROCS OUT.pt SLICES_JSON KEY VALUE ...

``losses`` trains ``mask_rcnn_R18_T1_FPN1_synthetic_cpu.yaml`` with the overrides and writes, on
process 0, each iteration's losses as Detectron2 logs them (averaged over the processes).
``roi-cache`` computes the cached RoI batches of the classifier (``CACHE_ROI_BATCHES``) over
the slices of a ``slices.json`` and writes them on process 0. The functions are at module level
so that the spawned processes can import them.
"""

import json
import os
import sys

import torch
from detectron2.engine import HookBase, launch
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from ct_lesion_d2.data.datasets import register_ct_classification  # noqa: E402
from ct_lesion_d2.engine import CTLesionTrainer  # noqa: E402
from ct_lesion_d2.model_zoo import get_config  # noqa: E402
from ct_lesion_d2.modeling.meta_arch.roi_batch_cache import (  # noqa: E402
    bind_roi_batch_cache,
    build_roi_batch_cache_loader,
)
from ct_lesion_d2.modeling.meta_arch.segmentation_weights import (  # noqa: E402
    initialize_from_segmenter,
)

CLASSES = ["Control", "Common Pneumonia", "COVID-19"]
CLS_NAME = "ct_lesion_test_distributed_cls"


class LossLog(HookBase):
    def __init__(self):
        self.losses = {}

    def after_step(self):
        latest = self.trainer.storage.latest()
        self.losses[self.trainer.iter] = {
            k: v for k, (v, _) in latest.items() if k.startswith("loss") or k == "total_loss"
        }


def losses(out, opts):
    seed_all_rng(0)
    trainer = CTLesionTrainer(get_config("mask_rcnn_R18_T1_FPN1_synthetic_cpu.yaml", opts))
    log = LossLog()
    trainer.register_hooks([log])
    trainer.resume_or_load(resume=False)
    trainer.train()
    if comm.is_main_process():
        with open(out, "w") as f:
            json.dump(log.losses, f)


def cached_rows(cfg):
    """The cached RoI-batch rows of ``cfg``'s training set, as the trainer makes them: the
    cached loader, the model with its detector, the cache bound to it (computed over the ranks
    and gathered)."""
    loader = build_roi_batch_cache_loader(cfg)
    model = CTLesionTrainer.build_model(cfg)
    initialize_from_segmenter(model, cfg)
    bind_roi_batch_cache(loader, model)
    cache = loader.roi_batch_cache
    return [cache(record) for record in cache.loader_records()]


def roi_cache(out, slices_json, opts):
    folder = os.path.dirname(slices_json)
    with open(slices_json) as f:
        records = [
            {
                "file_name": os.path.join(folder, r["file_name"]),
                "image_id": i,
                "class_id": r["class_id"],
            }
            for i, r in enumerate(json.load(f))
        ]
    register_ct_classification(CLS_NAME, lambda: records, CLASSES)
    cfg = get_config("classifier_R18_T1", opts + ["DATASETS.TRAIN", f"('{CLS_NAME}',)"])
    rows = cached_rows(cfg)
    if comm.is_main_process():
        torch.save(rows, out)


if __name__ == "__main__":
    task, num_procs, out, *rest = sys.argv[1:]
    if task == "losses":
        func, args = losses, (out, rest)
    else:
        func, args = roi_cache, (out, rest[0], rest[1:])
    launch(func, int(num_procs), dist_url="auto", args=args)
