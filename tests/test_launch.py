"""Training beyond one process through Detectron2's ``launch``, on the CPU (GLOO).

Two processes on one machine (``--num-gpus 2``) and two 'machines' on 127.0.0.1 (two launches
of one process each, ``--num-machines 2 --machine-rank R --dist-url tcp://127.0.0.1:PORT``)
train a few iterations on synthetic 128 px slices, write checkpoints, resume and evaluate
(COCOEvaluator gathers the predictions of both processes). The classifier's cached RoI batches
computed in two processes equal those of one. Two processes at batch 1 each follow the loss
trajectory of one at batch 2 where that can hold (see ``test_two_processes_follow_...``).

Needs the official Detectron2 (0.6's ``launch`` asserts CUDA): skipped on the 0.6 build, where
the one-line refusal is tested instead (``tests/test_training.py``).
"""

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model
from distributed_runs import cached_rows  # noqa: E402  (tests/, on sys.path under pytest)
from PIL import Image
from tiny_opts import TINY_SEGMENTER  # tests/, on sys.path under pytest

from ct_lesion_d2.data.converters import convert_layout
from ct_lesion_d2.data.datasets import register_ct_classification
from ct_lesion_d2.data.synthetic import generate_synthetic_slices
from ct_lesion_d2.model_zoo import get_config
from ct_lesion_d2.utils import compat

pytestmark = pytest.mark.skipif(
    not compat.LAUNCH_ON_CPU and not torch.cuda.is_available(),
    reason="several CPU processes need the official Detectron2's launch",
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_NET = os.path.join(REPO, "tools", "train_net.py")
RUNS = os.path.join(REPO, "tests", "distributed_runs.py")
CONFIG = os.path.join(REPO, "configs", "mask_rcnn_R18_T1_FPN1_synthetic_cpu.yaml")
SMALL = TINY_SEGMENTER + [
    "SOLVER.WARMUP_ITERS",
    "1",
    "SOLVER.STEPS",
    "()",
]
TRAIN_OPTS = SMALL + [
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
    "32",
    "SOLVER.IMS_PER_BATCH",
    "2",
    "SOLVER.CHECKPOINT_PERIOD",
    "2",
    "TEST.EVAL_PERIOD",
    "0",
    # every detection is kept, so that each validation image has predictions to gather
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
    "0.0",
]
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
VAL_IMAGE_IDS = []


@pytest.fixture(scope="module")
def datasets_root(tmp_path_factory):
    """$DETECTRON2_DATASETS with ``synthetic``: 4 training and 2 validation slices."""
    root = tmp_path_factory.mktemp("datasets")
    generate_synthetic_slices(str(root / "slices"), 6, seed=0, size=128, progress=False)
    outputs = convert_layout(
        "two-label-folder", str(root / "slices"), str(root / "synthetic"), val_fraction=0.34
    )
    with open(outputs["val"]) as f:
        VAL_IMAGE_IDS.extend(image["id"] for image in json.load(f)["images"])
    return str(root)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_net(datasets_root, output_dir, *args, opts=(), wait=True):
    cmd = [
        sys.executable,
        TRAIN_NET,
        "--config-file",
        CONFIG,
        "--verbose",  # the checks read Detectron2's lines (resuming, evaluation) on the terminal
        *args,
        *TRAIN_OPTS,
        *opts,
        "OUTPUT_DIR",
        str(output_dir),
    ]
    env = dict(ENV, DETECTRON2_DATASETS=datasets_root)
    if not wait:
        return subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def iteration_of(path):
    return torch.load(path, map_location="cpu", weights_only=False)["iteration"]


def assert_gathered_evaluation(output_dir, log):
    """COCOEvaluator ran on process 0 over the predictions of both processes."""
    assert len(VAL_IMAGE_IDS) >= 2
    results = os.path.join(
        output_dir, "inference", "ct_lesion_synthetic_val", "coco_instances_results.json"
    )
    with open(results) as f:
        image_ids = {p["image_id"] for p in json.load(f)}
    assert image_ids == set(VAL_IMAGE_IDS)
    assert "copypaste: Task: segm" in log


def test_two_processes_train_checkpoint_resume_and_evaluate(datasets_root, tmp_path):
    out = tmp_path / "out"
    first = train_net(
        datasets_root, out, "--num-gpus", "2", opts=["SOLVER.MAX_ITER", "3", "DATASETS.TEST", "()"]
    )
    assert first.returncode == 0, first.stderr[-3000:]
    assert iteration_of(out / "model_0000001.pth") == 1
    assert iteration_of(out / "model_final.pth") == 2
    with open(out / "data_order.json") as f:
        record = json.load(f)
    assert record["world_size"] == 2 and record["ims_per_batch"] == 1

    resumed = train_net(
        datasets_root, out, "--num-gpus", "2", "--resume", opts=["SOLVER.MAX_ITER", "5"]
    )
    log = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, log[-3000:]
    assert "Starting training from iteration 3" in log
    assert iteration_of(out / "model_final.pth") == 4
    assert os.path.isfile(out / "model_0000003.pth")
    assert_gathered_evaluation(str(out), log)


def test_two_machines_on_loopback(datasets_root, tmp_path):
    out = tmp_path / "out"
    url = f"tcp://127.0.0.1:{free_port()}"
    machines = [
        train_net(
            datasets_root,
            out,
            "--num-gpus",
            "1",
            "--num-machines",
            "2",
            "--machine-rank",
            str(rank),
            "--dist-url",
            url,
            opts=["SOLVER.MAX_ITER", "2"],
            wait=False,
        )
        for rank in (0, 1)
    ]
    logs = [m.communicate(timeout=600)[0] for m in machines]
    for m, log in zip(machines, logs):
        assert m.returncode == 0, log[-3000:]
    assert iteration_of(out / "model_final.pth") == 1
    with open(out / "data_order.json") as f:
        assert json.load(f)["world_size"] == 2
    assert_gathered_evaluation(str(out), logs[0])


def identical_slices(root):
    """$DETECTRON2_DATASETS/synthetic whose 4 training slices are one slice four times."""
    slices = os.path.join(root, "slices")
    generate_synthetic_slices(slices, 4, seed=0, size=128, progress=False)
    names = sorted(os.listdir(os.path.join(slices, "masks")))
    lesion = max(
        names,
        key=lambda n: np.count_nonzero(np.asarray(Image.open(os.path.join(slices, "masks", n)))),
    )
    for sub in ("images", "masks"):
        for name in names:
            if name != lesion:
                shutil.copy(os.path.join(slices, sub, lesion), os.path.join(slices, sub, name))
    convert_layout("two-label-folder", slices, os.path.join(root, "synthetic"), val_fraction=0.0)


def test_two_processes_follow_the_loss_trajectory_of_one_at_twice_the_batch(tmp_path):
    """Two processes at batch 1 against one at batch 2: the same losses at every iteration
    (relative 1e-4) and the same parameters up to rounding.

    It holds where every image of a batch gives the same statistics: here the four training
    images are one slice, there is no random augmentation and every anchor and RoI is sampled
    (batch sizes per image above their counts), so the per-process means that Detectron2's RoI
    losses and the per-process BatchNorm statistics of the backbone (``RESNETS.NORM BN``) take
    equal the means over the whole batch. With different images they cannot be equal: the box
    and mask losses are means over each process's RoIs and BatchNorm normalises each process's
    images alone (SyncBN would share the statistics), so two processes then train a slightly
    different, equally valid, model.
    """
    identical_slices(str(tmp_path))
    opts = SMALL + [
        "INPUT.RANDOM_FLIP",
        "none",
        "SOLVER.IMS_PER_BATCH",
        "2",
        "SOLVER.MAX_ITER",
        "3",
        "SOLVER.CHECKPOINT_PERIOD",
        "1",
        "DATASETS.TRAIN",
        "('ct_lesion_synthetic_train',)",
        "DATASETS.TEST",
        "()",
        "MODEL.RPN.BATCH_SIZE_PER_IMAGE",
        "100000",
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
        "100000",
        "SOLVER.BASE_LR",
        "0.02",
    ]
    env = dict(ENV, DETECTRON2_DATASETS=str(tmp_path))
    runs = {}
    for procs in (1, 2):
        out = tmp_path / f"p{procs}"
        cmd = [
            sys.executable,
            RUNS,
            "losses",
            str(procs),
            str(tmp_path / f"p{procs}.json"),
            *opts,
            "OUTPUT_DIR",
            str(out),
        ]
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        with open(tmp_path / f"p{procs}.json") as f:
            runs[procs] = json.load(f)
        runs[procs, "weights"] = torch.load(out / "model_final.pth", weights_only=False)["model"]
    assert list(runs[1]) == ["0", "1", "2"] and runs[1].keys() == runs[2].keys()
    for it, losses in runs[1].items():
        assert losses.keys() == runs[2][it].keys()
        for name, value in losses.items():
            assert runs[2][it][name] == pytest.approx(value, rel=1e-4, abs=1e-6), (it, name)
    assert runs[1]["2"]["total_loss"] != runs[1]["0"]["total_loss"]  # it did train

    # The weights: the two runs differ by rounding (sums in another order, which the top-k and
    # NMS choices of the proposals can amplify), well under what the last two iterations
    # changed (0.4 % measured). BatchNorm's running variance is left out: its unbiased estimate
    # divides by n - 1 with n the pixels of each process's batch, so it differs by design.
    def flat(state):
        return torch.cat(
            [
                v.flatten().double()
                for k, v in sorted(state.items())
                if v.is_floating_point() and "running_" not in k
            ]
        )

    one, two = flat(runs[1, "weights"]), flat(runs[2, "weights"])
    after_first = flat(
        torch.load(tmp_path / "p1" / "model_0000000.pth", weights_only=False)["model"]
    )
    assert (two - one).norm() < 0.02 * (one - after_first).norm()


def test_cached_roi_batches_sharded_over_two_processes_equal_one(tmp_path):
    slices = tmp_path / "slices"
    generate_synthetic_slices(str(slices), 5, seed=2, size=128, progress=False)
    torch.manual_seed(0)
    segmenter = build_model(get_config("mask_rcnn_R18_T1", ["MODEL.DEVICE", "cpu"]))
    DetectionCheckpointer(segmenter, save_dir=str(tmp_path)).save("segmenter")
    opts = SMALL + [
        "MODEL.CT_CLASSIFIER.SEGMENTATION_WEIGHTS",
        str(tmp_path / "segmenter.pth"),
        "MODEL.CT_CLASSIFIER.TRAIN_BN_AFFINE",
        "False",
        "MODEL.CT_CLASSIFIER.CACHE_ROI_BATCHES",
        "True",
        "INPUT.RANDOM_FLIP",
        "none",
        "SOLVER.IMS_PER_BATCH",
        "2",
        "MODEL.RPN.POST_NMS_TOPK_TEST",
        "300",
        "OUTPUT_DIR",
        str(tmp_path / "out"),
    ]
    cmd = [
        sys.executable,
        RUNS,
        "roi-cache",
        "2",
        str(tmp_path / "rows.pt"),
        str(slices / "slices.json"),
        *opts,
    ]
    result = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    sharded = torch.load(tmp_path / "rows.pt", weights_only=False)

    with open(slices / "slices.json") as f:
        records = [
            {"file_name": str(slices / r["file_name"]), "image_id": i, "class_id": r["class_id"]}
            for i, r in enumerate(json.load(f))
        ]
    name = "ct_lesion_test_launch_cls"
    register_ct_classification(name, lambda: records, ["Control", "Common Pneumonia", "COVID-19"])
    try:
        cfg = get_config("classifier_R18_T1", opts + ["DATASETS.TRAIN", f"('{name}',)"])
        single = cached_rows(cfg)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    assert len(sharded) == len(single) == 5
    for a, b in zip(sharded, single):
        assert (a["file_name"], a["class_id"], a["image_id"]) == (
            b["file_name"],
            b["class_id"],
            b["image_id"],
        )
        assert torch.allclose(a["roi_rows"], b["roi_rows"], atol=1e-5)
    assert sum(float(r["roi_rows"].abs().sum()) for r in single) > 0
