"""A few iterations of real training through DefaultTrainer on real CT slices."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.utils.env import seed_all_rng

from ct_lesion_d2.data.converters import convert_layout
from ct_lesion_d2.data.datasets import register_ct_lesion_coco
from ct_lesion_d2.engine import CTLesionTrainer
from ct_lesion_d2.model_zoo import get_config
from ct_lesion_d2.utils import compat

NAME = "ct_lesion_test_medseg_few"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_NET = os.path.join(REPO, "tools", "train_net.py")
CPU_CONFIG = os.path.join(REPO, "configs", "mask_rcnn_R18_T1_FPN1_medseg100_cpu.yaml")


@pytest.fixture
def few_real_slices(shared_data, tmp_path):
    source = tmp_path / "src"
    for sub in ("images", "masks"):
        os.makedirs(source / sub)
        for stem in ("medseg_000", "medseg_001", "medseg_002", "medseg_003"):
            shutil.copy(os.path.join(shared_data, "medseg100", sub, stem + ".png"), source / sub)
    # laid out as $DETECTRON2_DATASETS/medseg100, which tools/train_net.py finds by name
    outputs = convert_layout("binary-folder", str(source), str(tmp_path / "coco" / "medseg100"))
    register_ct_lesion_coco(NAME, outputs["train"], ["Lesion"])
    yield str(tmp_path / "coco")
    DatasetCatalog.pop(NAME)
    MetadataCatalog.pop(NAME)


def test_loss_goes_down_on_real_slices(few_real_slices, tmp_path):
    cfg = get_config(
        "mask_rcnn_R18_T1_FPN1_medseg100_cpu.yaml",
        [
            "MODEL.DEVICE",
            "cpu",
            "SEED",
            "0",
            "OUTPUT_DIR",
            str(tmp_path / "out"),
            "DATASETS.TRAIN",
            f"('{NAME}',)",
            "DATASETS.TEST",
            "()",
            "DATALOADER.NUM_WORKERS",
            "0",
            "INPUT.MIN_SIZE_TRAIN",
            "(256,)",
            "INPUT.MAX_SIZE_TRAIN",
            "256",
            "SOLVER.MAX_ITER",
            "40",
            "SOLVER.WARMUP_ITERS",
            "5",
            "SOLVER.STEPS",
            "()",
            "SOLVER.CHECKPOINT_PERIOD",
            "1000",
            "TEST.EVAL_PERIOD",
            "0",
        ],
    )
    seed_all_rng(0)  # default_setup is not called here; this fixes the data order too
    trainer = CTLesionTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    losses = [v for v, _ in trainer.storage.history("total_loss").values()]
    assert len(losses) == 40 and np.isfinite(losses).all()
    assert np.median(losses[-10:]) < 0.75 * np.median(losses[:5])
    weights = tmp_path / "out" / "model_final.pth"
    assert os.path.isfile(weights)

    # the same weights through the command line tool's --eval-only path
    env = dict(os.environ, PYTHONPATH=REPO, DETECTRON2_DATASETS=few_real_slices)
    cmd = [
        sys.executable,
        TRAIN_NET,
        "--config-file",
        CPU_CONFIG,
        "--eval-only",
        "MODEL.WEIGHTS",
        str(weights),
        "MODEL.DEVICE",
        "cpu",
        "INPUT.MIN_SIZE_TEST",
        "256",
        "INPUT.MAX_SIZE_TEST",
        "256",
        "OUTPUT_DIR",
        str(tmp_path / "eval"),
    ]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    # the terminal has one line per task; Detectron2's tables are in the log file
    assert "bbox: AP " in result.stdout and "copypaste" not in result.stdout
    assert "copypaste: Task: bbox" in open(tmp_path / "eval" / "log.txt").read()
    assert os.path.isfile(
        tmp_path / "eval" / "inference" / "ct_lesion_medseg100_val" / "coco_instances_results.json"
    )


@pytest.mark.skipif(
    compat.LAUNCH_ON_CPU or torch.cuda.is_available(),
    reason="this Detectron2 launches several CPU processes (tests/test_launch.py)",
)
def test_several_processes_on_detectron2_0_6_without_cuda_is_a_clear_error():
    cmd = [sys.executable, TRAIN_NET, "--config-file", CPU_CONFIG, "--num-gpus", "2"]
    result = subprocess.run(
        cmd, env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: 2 processes without CUDA need the official Detectron2 (this is pb1-detectron2 "
        "0.6 without its C++ extension (placeholder detectron2._C)); see the README's set-up, "
        "or use --num-gpus 1"
    )
    assert "Traceback" not in result.stderr
