"""Determinism of training on the CPU, the resumable data order, and the stop on a non-finite
loss (in-process, a few iterations on synthetic 128 px slices)."""

import hashlib
import logging
import os
import random

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import HookBase
from detectron2.utils.env import seed_all_rng
from tiny_opts import TINY_SCHEDULE, TINY_SEGMENTER  # tests/, on sys.path under pytest

from ct_lesion_d2.data.build import SeededMapDataset, derived_seed
from ct_lesion_d2.data.converters import convert_layout
from ct_lesion_d2.data.datasets import register_ct_lesion_coco
from ct_lesion_d2.data.samplers import ResumableBatchSampler, aspect_ratio_buckets
from ct_lesion_d2.data.synthetic import generate_synthetic_slices
from ct_lesion_d2.engine import CTLesionTrainer, NonFiniteLossError
from ct_lesion_d2.model_zoo import get_config

TRAIN, VAL = "ct_lesion_test_faults_train", "ct_lesion_test_faults_val"


@pytest.fixture(scope="module")
def synthetic_sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    generate_synthetic_slices(str(root / "slices"), 6, seed=1, size=128, progress=False)
    outputs = convert_layout(
        "two-label-folder", str(root / "slices"), str(root / "coco"), val_fraction=0.1
    )
    register_ct_lesion_coco(TRAIN, outputs["train"], ["Lesion"])
    register_ct_lesion_coco(VAL, outputs["val"], ["Lesion"])
    yield
    for name in (TRAIN, VAL):
        DatasetCatalog.pop(name)
        MetadataCatalog.pop(name)


def make_cfg(output_dir, max_iter=4, seed=0, test=(), extra=()):
    """The small training config of these tests."""
    opts = (
        TINY_SEGMENTER
        + TINY_SCHEDULE
        + [
            "SEED",
            str(seed),
            "OUTPUT_DIR",
            str(output_dir),
            "DATASETS.TRAIN",
            f"('{TRAIN}',)",
            "DATASETS.TEST",
            str(tuple(test)),
            "SOLVER.MAX_ITER",
            str(max_iter),
            "TEST.EVAL_PERIOD",
            "0",
        ]
        + list(extra)
    )
    return get_config("mask_rcnn_R18_T1_FPN1_synthetic_cpu.yaml", opts)


def make_trainer(output_dir, max_iter=4, seed=0, test=(), extra=()):
    cfg = make_cfg(output_dir, max_iter, seed, test, extra)
    seed_all_rng(seed)  # what default_setup does in tools/train_net.py (model initialisation)
    trainer = CTLesionTrainer(cfg)
    trainer.resume_or_load(resume=False)
    return trainer


class LossLog(HookBase):
    """Keeps each iteration's losses and, after each step, a copy of the weights."""

    def __init__(self):
        self.losses, self.weights = {}, {}

    def after_step(self):
        latest = self.trainer.storage.latest()
        self.losses[self.trainer.iter] = {
            k: v for k, (v, _) in latest.items() if k.startswith("loss") or k == "total_loss"
        }
        self.weights[self.trainer.iter] = {
            k: v.detach().clone() for k, v in self.trainer.model.state_dict().items()
        }


def run(trainer):
    log = LossLog()
    trainer.register_hooks([log])
    trainer.train()
    return log


# ----------------------------------------------------------------------------- determinism


def test_two_runs_with_one_seed_give_identical_losses(synthetic_sets, tmp_path):
    first = run(make_trainer(tmp_path / "a"))
    # disturb the global generators between the runs: the run must not depend on them
    random.random(), np.random.rand(), torch.rand(3)
    second = run(make_trainer(tmp_path / "b"))
    assert list(first.losses) == [0, 1, 2, 3]
    assert first.losses == second.losses  # exact float equality, every loss, every iteration
    for k, v in first.weights[3].items():
        assert torch.equal(v, second.weights[3][k]), k


def test_another_seed_gives_another_run(synthetic_sets, tmp_path):
    # the first iteration tells them apart
    first = run(make_trainer(tmp_path / "a", max_iter=1, seed=0))
    other = run(make_trainer(tmp_path / "b", max_iter=1, seed=1))
    assert first.losses[0]["total_loss"] != other.losses[0]["total_loss"]


def test_resumable_batches_skip_exactly_the_trained_iterations():
    from detectron2.data.samplers import TrainingSampler

    sampler = ResumableBatchSampler(TrainingSampler(7, seed=3), 2)
    full = sampler.batches(0, 20)
    sampler.start_iter = 13
    resumed = [b for b, _ in zip(sampler, range(7))]
    assert resumed == full[13:20]
    positions = [p for batch in full for p, _ in batch]
    assert positions == list(range(40))  # every element of the stream, once, in order
    # each pass of 7 positions is a permutation of the 7 images
    indices = [i for batch in full for _, i in batch]
    assert sorted(indices[:7]) == list(range(7)) and sorted(indices[7:14]) == list(range(7))


def test_aspect_ratio_grouping_batches_only_like_images():
    from detectron2.data.samplers import TrainingSampler

    dicts = [{"width": 300, "height": 200}, {"width": 200, "height": 300}] * 5
    buckets = aspect_ratio_buckets(dicts)
    assert buckets == [0, 1] * 5
    sampler = ResumableBatchSampler(TrainingSampler(10, seed=0), 2, buckets=buckets)
    for batch in sampler.batches(0, 30):
        assert len({buckets[i] for _, i in batch}) == 1


def test_augmentation_depends_on_the_stream_position_only():
    def mapper(record):
        return {"draw": np.random.rand(), "torch": torch.rand(1)}

    dataset = SeededMapDataset([{"file_name": "a.png"}, {"file_name": "b.png"}], mapper, seed=5)
    first = dataset[(17, 1)]
    np.random.rand(), torch.rand(2)
    again = dataset[(17, 1)]
    assert first["draw"] == again["draw"] and torch.equal(first["torch"], again["torch"])
    assert dataset[(18, 1)]["draw"] != first["draw"]
    # the caller's generators are left as they were
    np.random.seed(0)
    torch.manual_seed(0)
    expected = np.random.rand(), torch.rand(1)
    np.random.seed(0)
    torch.manual_seed(0)
    dataset[(3, 0)]
    assert (np.random.rand(), torch.rand(1)) == expected
    assert derived_seed(1, 2) != derived_seed(2, 1)


def test_mapper_errors_name_the_file():
    def mapper(record):
        raise OSError("image file is truncated")

    dataset = SeededMapDataset([{"file_name": "/data/slice_7.png"}], mapper, seed=0)
    with pytest.raises(Exception) as excinfo:
        dataset[(0, 0)]
    assert "/data/slice_7.png" in str(excinfo.value)
    assert "image file is truncated" in str(excinfo.value)


# ----------------------------------------------------------------------------- NaN loss


def inject_nan(trainer, at_iteration, loss="loss_mask"):
    forward = trainer.model.forward

    def patched(batched_inputs):
        losses = forward(batched_inputs)
        if trainer.iter == at_iteration:
            losses[loss] = losses[loss] * float("nan")
        return losses

    trainer.model.forward = patched


def sha1(path):
    with open(path, "rb") as f:
        return hashlib.sha1(f.read()).hexdigest()


class CheckpointHash(HookBase):
    """Hashes model_0000001.pth right after it is written (runs after PeriodicCheckpointer)."""

    def after_step(self):
        if self.trainer.iter == 1:
            self.digest = sha1(os.path.join(self.trainer.cfg.OUTPUT_DIR, "model_0000001.pth"))


def test_nan_loss_stops_with_iteration_losses_and_checkpoint(synthetic_sets, tmp_path):
    trainer = make_trainer(tmp_path, max_iter=6)
    inject_nan(trainer, at_iteration=3)
    digest = CheckpointHash()
    log = LossLog()
    trainer.register_hooks([digest, log])
    with pytest.raises(NonFiniteLossError) as excinfo:
        trainer.train()
    message = str(excinfo.value)
    assert "iteration 3" in message
    assert "loss_mask=nan" in message and "loss_cls=" in message
    good = os.path.join(str(tmp_path), "model_0000001.pth")
    assert good in message and "untouched" in message
    assert excinfo.value.iteration == 3 and np.isnan(excinfo.value.losses["loss_mask"])
    # nothing written after the bad step; the last good checkpoint is byte for byte the same
    assert sorted(f for f in os.listdir(tmp_path) if f.endswith(".pth")) == ["model_0000001.pth"]
    with open(tmp_path / "last_checkpoint") as f:
        assert f.read() == "model_0000001.pth"
    assert sha1(good) == digest.digest
    # no optimizer step was taken with the non-finite gradients (the forward pass did update
    # the BatchNorm running statistics in memory, which no checkpoint holds)
    assert 3 not in log.weights
    for k, v in trainer.model.named_parameters():
        assert torch.equal(v, log.weights[2][k]), k


def test_nan_at_the_last_iteration_writes_no_final_model_and_skips_evaluation(
    synthetic_sets, tmp_path
):
    trainer = make_trainer(tmp_path, max_iter=4, test=(VAL,))
    inject_nan(trainer, at_iteration=3, loss="loss_rpn_cls")
    with pytest.raises(NonFiniteLossError, match="iteration 3: loss_rpn_cls"):
        trainer.train()
    assert not os.path.exists(tmp_path / "model_final.pth")
    assert not os.path.exists(tmp_path / "inference")  # Detectron2 would evaluate here
    assert os.path.isfile(tmp_path / "model_0000001.pth")


def test_loader_batches_do_not_depend_on_workers_or_start(synthetic_sets, tmp_path):
    from ct_lesion_d2.data.build import build_resumable_train_loader

    def batches(num_workers, start, count):
        cfg = make_cfg(tmp_path / f"w{num_workers}", max_iter=1)
        cfg.DATALOADER.NUM_WORKERS = num_workers
        loader = build_resumable_train_loader(cfg)
        loader.set_start_iter(start)
        out = []
        for batch in loader:
            out.append(
                [
                    (d["file_name"], d["image"].clone(), d["instances"].gt_boxes.tensor)
                    for d in batch
                ]
            )
            if len(out) == count:
                return out

    serial = batches(0, 0, 12)
    for other in (batches(2, 0, 12), [None, None] + batches(2, 2, 10)):
        for a, b in zip(serial, other):
            if b is None:
                continue
            for (name_a, image_a, boxes_a), (name_b, image_b, boxes_b) in zip(a, b):
                assert name_a == name_b
                assert torch.equal(image_a, image_b) and torch.equal(boxes_a, boxes_b)
    # the augmentation is random (a slice seen twice is flipped once and not the other time),
    # so the equalities above are not those of a loader without randomness
    seen, differing = {}, False
    for batch in serial:
        for name, image, _ in batch:
            if name in seen and not torch.equal(seen[name], image):
                differing = True
                assert torch.equal(seen[name], image.flip(-1))
            seen[name] = image
    assert differing


# ----------------------------------------------------------------------------- weight averaging


def test_weight_average_is_the_mean_of_the_last_iterates(synthetic_sets, tmp_path):
    plain = run(make_trainer(tmp_path / "plain"))
    swa = ["SOLVER.SWA.ENABLED", "True", "SOLVER.SWA.START", "0.5"]
    averaged = run(make_trainer(tmp_path / "swa", extra=swa))
    # the average does not touch training: the same iterates up to the last step
    assert averaged.losses == plain.losses
    for k, v in plain.weights[2].items():
        assert torch.equal(averaged.weights[2][k], v), k
    # after the last step the model holds the mean of the iterates 2 and 3 (START 0.5 of 4)
    final = averaged.weights[3]
    moved = 0
    for k, v in plain.weights[3].items():
        if v.is_floating_point():
            mean = (plain.weights[2][k] + v) / 2
            torch.testing.assert_close(final[k], mean, rtol=1e-5, atol=1e-6, msg=k)
            moved += not torch.equal(final[k], v)
        else:
            assert torch.equal(final[k], v), k
    assert moved > 0
    # ... and so does the final checkpoint
    saved = torch.load(tmp_path / "swa" / "model_final.pth", weights_only=False)
    for k, v in final.items():
        assert torch.equal(saved["model"][k], v), k
    # its trainer state does not carry a second copy of the model
    assert "LRScheduler" in saved["trainer"]["hooks"]  # where a hook's state would be
    assert "WeightAverage" not in saved["trainer"]["hooks"]


def test_weight_average_of_the_last_iterate_alone_is_the_plain_model(synthetic_sets, tmp_path):
    plain = run(make_trainer(tmp_path / "plain", max_iter=2))
    swa = ["SOLVER.SWA.ENABLED", "True", "SOLVER.SWA.START", "0.5"]
    last_only = run(make_trainer(tmp_path / "swa", max_iter=2, extra=swa))
    for k, v in plain.weights[1].items():
        assert torch.equal(last_only.weights[1][k], v), k


@pytest.mark.parametrize("start", ["1.0", "-0.1"])
def test_weight_average_start_outside_the_run_is_refused(synthetic_sets, tmp_path, start):
    swa = ["SOLVER.SWA.ENABLED", "True", "SOLVER.SWA.START", start]
    with pytest.raises(ValueError, match=r"SOLVER.SWA.START is .*must be in \[0, 1\)"):
        make_trainer(tmp_path, extra=swa)


def test_weight_average_says_when_a_resumed_run_starts_it_late(synthetic_sets, tmp_path, caplog):
    run(make_trainer(tmp_path, max_iter=2))  # no SWA; checkpoints after iterations 1 (and final)
    os.remove(tmp_path / "model_final.pth")
    with open(tmp_path / "last_checkpoint", "w") as f:
        f.write("model_0000001.pth")
    swa = ["SOLVER.SWA.ENABLED", "True", "SOLVER.SWA.START", "0.25"]  # from iteration 1 of 4
    trainer = CTLesionTrainer(make_cfg(tmp_path, max_iter=4, extra=swa))
    trainer.resume_or_load(resume=True)
    assert trainer.start_iter == 2
    with caplog.at_level(logging.WARNING, logger="ct_lesion_d2.engine.hooks"):
        trainer.train()
    assert "the average starts at iteration 2 instead of 1" in caplog.text
