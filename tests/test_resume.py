"""Training killed at any moment resumes with --resume to the weights of an uninterrupted run.

Each test runs ``tools/train_net.py`` as a subprocess on a few synthetic 128 px slices (tiny
RPN/RoI batches, 6 iterations), kills it with SIGKILL at a chosen moment
(``tests/fault_injection.py``), resumes it, and compares the final weights bit for bit with
those of the uninterrupted run (CPU, same seed). Checkpoints are written after iterations 1, 3
and 5 (and model_final after 5); the model is evaluated after iteration 3 and after training in
the reference run and in the runs that test evaluation; the others skip evaluation, which must
not change the weights.
"""

import glob
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from tiny_opts import TINY_SCHEDULE, TINY_SEGMENTER  # tests/, on sys.path under pytest

from ct_lesion_d2.data.converters import convert_layout
from ct_lesion_d2.data.synthetic import generate_synthetic_slices

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DRIVER = os.path.join(REPO, "tests", "fault_injection.py")
CONFIG = os.path.join(REPO, "configs", "mask_rcnn_R18_T1_FPN1_synthetic_cpu.yaml")
MAX_ITER = 6
OPTS = TINY_SEGMENTER + TINY_SCHEDULE + ["SOLVER.MAX_ITER", str(MAX_ITER), "TEST.EVAL_PERIOD", "4"]
# Evaluation neither reads nor moves the random streams of training, so runs that need no
# evaluation skip it and must still end on the reference's weights.
NO_EVAL = ["DATASETS.TEST", "()"]


@pytest.fixture(scope="module")
def datasets_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    slices = root / "slices"
    generate_synthetic_slices(str(slices), 6, seed=0, size=128, progress=False)
    convert_layout("two-label-folder", str(slices), str(root / "synthetic"), val_fraction=0.1)
    return str(root)


def train(
    datasets_root, output_dir, *, resume=False, fault=None, wait=True, evaluate=False, args=()
):
    """Run train_net.py (through the fault driver); returns the CompletedProcess or Popen."""
    env = dict(os.environ, PYTHONPATH=REPO, DETECTRON2_DATASETS=datasets_root)
    env.pop("CT_LESION_FAULT", None)
    if fault:
        env["CT_LESION_FAULT"] = fault
    # --verbose: the checks read Detectron2's lines (resuming, iterations) on the terminal
    cmd = [sys.executable, DRIVER, "--config-file", CONFIG, "--verbose"]
    cmd += ["--resume"] if resume else []
    cmd += list(args)
    cmd += OPTS + ([] if evaluate else NO_EVAL) + ["OUTPUT_DIR", str(output_dir)]
    if not wait:
        return subprocess.Popen(
            cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def weights(path):
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def assert_same_weights(path, reference):
    ours, theirs = weights(path), weights(reference)
    assert ours.keys() == theirs.keys()
    differing = [k for k in ours if not torch.equal(ours[k], theirs[k])]
    assert not differing, f"{len(differing)} tensors differ from the uninterrupted run"


def last_checkpoint(output_dir):
    with open(os.path.join(output_dir, "last_checkpoint")) as f:
        return f.read().strip()


def killed(result):
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]


def resume_ok(datasets_root, output_dir, reference, evaluate=False):
    result = train(datasets_root, output_dir, resume=True, evaluate=evaluate)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_weights(os.path.join(output_dir, "model_final.pth"), reference)
    assert not glob.glob(os.path.join(output_dir, ".tmp-*"))
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def reference(datasets_root, tmp_path_factory):
    """The uninterrupted run: its output folder and its final weights."""
    output_dir = tmp_path_factory.mktemp("reference")
    result = train(datasets_root, output_dir, evaluate=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return str(output_dir), os.path.join(output_dir, "model_final.pth")


@pytest.fixture(scope="module")
def killed_at_iteration_4(datasets_root, tmp_path_factory):
    """The output folder of a run killed during iteration 4; tests resume copies of it."""
    output_dir = tmp_path_factory.mktemp("killed_at_4")
    killed(train(datasets_root, output_dir, fault="iteration:4"))
    return output_dir


def test_uninterrupted_run_records_seed_and_data_order(reference):
    output_dir, _ = reference
    with open(os.path.join(output_dir, "data_order.json")) as f:
        record = json.load(f)
    assert record["seed"] == 0
    assert record["ims_per_batch"] == 1 and record["world_size"] == 1
    assert len(record["batches"]) == MAX_ITER
    used = {i for batch in record["batches"] for i in batch}
    assert used <= set(range(len(record["file_names"])))
    assert all(os.path.basename(n).startswith("synth_") for n in record["file_names"])
    assert last_checkpoint(output_dir) == "model_final.pth"
    # the periodic checkpoints and the final evaluation are all there
    for it in (1, 3, 5):
        assert os.path.isfile(os.path.join(output_dir, f"model_{it:07d}.pth"))
    assert os.path.isfile(
        os.path.join(
            output_dir, "inference", "ct_lesion_synthetic_val", "coco_instances_results.json"
        )
    )


def test_kill_during_an_iteration(datasets_root, reference, killed_at_iteration_4, tmp_path):
    shutil.copytree(killed_at_iteration_4, tmp_path, dirs_exist_ok=True)
    assert last_checkpoint(tmp_path) == "model_0000003.pth"
    assert not os.path.exists(tmp_path / "model_final.pth")
    log = resume_ok(datasets_root, tmp_path, reference[1])
    assert "Starting training from iteration 4" in log
    assert "matches" in log  # the recorded data order is the resumed run's order


def test_kill_while_a_checkpoint_is_written(datasets_root, reference, tmp_path):
    killed(train(datasets_root, tmp_path, fault="checkpoint:model_0000005"))
    partial = glob.glob(str(tmp_path / ".tmp-model_0000005.pth.*"))
    assert len(partial) == 1 and os.path.getsize(partial[0]) > 0  # half-written, not renamed
    assert not os.path.exists(tmp_path / "model_0000005.pth")
    assert last_checkpoint(tmp_path) == "model_0000003.pth"
    log = resume_ok(datasets_root, tmp_path, reference[1])
    assert "Removing" in log and ".tmp-model_0000005.pth" in log
    assert "Starting training from iteration 4" in log


def test_kill_between_checkpoint_and_last_checkpoint(datasets_root, reference, tmp_path):
    killed(train(datasets_root, tmp_path, fault="tag:model_0000005"))
    assert os.path.isfile(tmp_path / "model_0000005.pth")
    assert last_checkpoint(tmp_path) == "model_0000003.pth"
    log = resume_ok(datasets_root, tmp_path, reference[1])
    assert "Starting training from iteration 4" in log


def test_kill_during_evaluation(datasets_root, reference, tmp_path):
    # the evaluation after iteration 3
    killed(train(datasets_root, tmp_path, fault="eval:1", evaluate=True))
    assert last_checkpoint(tmp_path) == "model_0000003.pth"
    log = resume_ok(datasets_root, tmp_path, reference[1], evaluate=True)
    assert "Starting training from iteration 4" in log
    assert os.path.isfile(
        tmp_path / "inference" / "ct_lesion_synthetic_val" / "coco_instances_results.json"
    )


def test_resume_skips_a_corrupt_last_checkpoint(
    datasets_root, reference, killed_at_iteration_4, tmp_path
):
    shutil.copytree(killed_at_iteration_4, tmp_path, dirs_exist_ok=True)
    newest = tmp_path / "model_0000003.pth"
    assert last_checkpoint(tmp_path) == newest.name
    # damage it the way a non-atomic writer or a full disk would: truncated in place
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 3])
    log = resume_ok(datasets_root, tmp_path, reference[1])
    assert f"Cannot resume from {newest}: unreadable" in log
    assert "Resuming from" in log and "model_0000001.pth" in log
    assert "Starting training from iteration 2" in log


def test_kill_during_the_final_evaluation_with_model_final_damaged(
    datasets_root, reference, tmp_path
):
    killed(train(datasets_root, tmp_path, fault="eval:2", evaluate=True))
    final = tmp_path / "model_final.pth"
    assert last_checkpoint(tmp_path) == final.name
    final.write_bytes(final.read_bytes()[:1000])
    # model_final is written again
    log = resume_ok(datasets_root, tmp_path, reference[1], evaluate=True)
    assert "Resuming from" in log and "model_0000005.pth" in log
    assert "Re-saving" in log
    assert "copypaste: Task: segm" in log  # the final evaluation ran


def test_kill_at_an_arbitrary_moment(datasets_root, reference, tmp_path):
    """SIGKILL from outside once the first checkpoint exists, wherever the run then is."""
    process = train(datasets_root, tmp_path, wait=False)
    deadline = time.monotonic() + 240
    while not os.path.exists(tmp_path / "model_0000001.pth") and process.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint written"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    resume_ok(datasets_root, tmp_path, reference[1])


def md5(path):
    with open(path, "rb") as f:
        return hashlib.md5(f.read()).hexdigest()


def test_training_again_into_a_finished_run_needs_resume_or_overwrite(
    datasets_root, reference, tmp_path
):
    output_dir = tmp_path / "run"
    shutil.copytree(reference[0], output_dir)
    final = output_dir / "model_final.pth"
    before = md5(final)
    result = train(datasets_root, output_dir)
    assert result.returncode == 1
    # one line at the end (library warnings from the imports may come before it), no traceback
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: OUTPUT_DIR {output_dir} holds checkpoints (model_final.pth and 4 more): pass "
        "--resume to continue that run, --overwrite to replace it, or another OUTPUT_DIR"
    )
    assert "Traceback" not in result.stderr
    assert md5(final) == before
    # --overwrite removes the old checkpoints and trains from scratch to the same weights
    os.remove(output_dir / "model_0000003.pth")
    result = train(datasets_root, output_dir, args=["--overwrite"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "--overwrite: removed 4 checkpoint files" in result.stdout
    assert_same_weights(str(final), reference[1])


SWA = ["SOLVER.SWA.ENABLED", "True", "SOLVER.SWA.START", "0.5"]  # iterations 3, 4, 5 averaged


def test_kill_while_weights_are_averaged(datasets_root, reference, tmp_path):
    """SOLVER.SWA: the average so far is in the checkpoints, so the resumed run's final model
    is the uninterrupted run's average of the same iterates."""
    uninterrupted = tmp_path / "uninterrupted"
    result = train(datasets_root, uninterrupted, args=SWA)
    assert result.returncode == 0, result.stderr[-3000:]
    averaged = uninterrupted / "model_final.pth"
    assert any(
        not torch.equal(v, weights(reference[1])[k]) for k, v in weights(averaged).items()
    ), "the average is the plain run's last iterate"

    def hooks_state(path):
        return torch.load(path, weights_only=False)["trainer"].get("hooks", {})

    assert "WeightAverage" not in hooks_state(uninterrupted / "model_0000001.pth")
    assert "WeightAverage" in hooks_state(uninterrupted / "model_0000003.pth")

    run = tmp_path / "killed"
    killed(train(datasets_root, run, fault="iteration:4", args=SWA))
    assert last_checkpoint(run) == "model_0000003.pth"
    result = train(datasets_root, run, resume=True, args=SWA)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Starting training from iteration 4" in result.stdout + result.stderr
    assert_same_weights(str(run / "model_final.pth"), str(averaged))
