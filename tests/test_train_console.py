"""A quiet training start: ``tools/train_net.py`` on the embedded synthetic config shows a few
lines on the terminal (what is trained, a progress bar, the results), while
``OUTPUT_DIR/log.txt`` holds the whole preamble and the metrics without ANSI colour codes;
``--verbose`` shows the config on the terminal too."""

import os
import subprocess
import sys

import pytest

from ct_lesion_d2.data.converters import convert_layout
from ct_lesion_d2.data.synthetic import generate_synthetic_slices
from ct_lesion_d2.engine.trainer import nest_eval_results

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_NET = os.path.join(REPO, "tools", "train_net.py")
CONFIG = os.path.join(REPO, "configs", "mask_rcnn_R18_T1_FPN1_synthetic_cpu.yaml")
SHORT = [
    "SOLVER.MAX_ITER", "2", "SOLVER.WARMUP_ITERS", "1", "SOLVER.STEPS", "()",
    "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MAX_SIZE_TRAIN", "96", "DATASETS.TEST", "()",
]  # fmt: skip


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """$DETECTRON2_DATASETS holding ``synthetic`` (4 slices of 128 x 128, used at 96 x 96)."""
    root = tmp_path_factory.mktemp("datasets")
    slices = str(root / "synthetic" / "slices")
    generate_synthetic_slices(slices, 4, seed=0, size=128, progress=False)
    convert_layout("two-label-folder", slices, str(root / "synthetic"))
    return str(root)


def train_net(datasets, output, *extra):
    env = dict(os.environ, PYTHONPATH=REPO, DETECTRON2_DATASETS=datasets)
    cmd = [sys.executable, TRAIN_NET, "--config-file", CONFIG, *extra, *SHORT]
    result = subprocess.run(
        cmd + ["OUTPUT_DIR", str(output)], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_terminal_is_short_and_the_log_is_complete_and_plain(datasets, tmp_path):
    output = tmp_path / "out"
    result = train_net(datasets, output, "--progress")
    terminal = [line for line in (result.stdout + result.stderr).split("\n") if line.strip()]
    assert len(terminal) < 40, "\n".join(terminal)
    assert "Training mask_rcnn_R18_T1_FPN1_synthetic_cpu.yaml for 2 iterations" in result.stdout
    assert "2/2" in result.stderr  # the progress bar, asked for although stderr is a pipe
    for preamble in ("Environment info", "Running with full config", "Model:", "total_loss"):
        assert preamble not in result.stdout
    assert "CUDA is not available" not in result.stdout + result.stderr  # the config sets none
    log = open(output / "log.txt").read()
    for preamble in ("Environment info", "Running with full config", "Model:", "total_loss"):
        assert preamble in log
    assert "\x1b" not in log and "MAX_SIZE_TRAIN: 96" in log

    # --verbose on the finished run (resumed: no iteration left) shows the config, plainly
    verbose = train_net(datasets, output, "--verbose", "--resume")
    assert "Running with full config" in verbose.stdout and "MAX_SIZE_TRAIN: 96" in verbose.stdout
    assert "\x1b" not in verbose.stdout  # a pipe is no terminal: no colour codes
    assert "\x1b" not in open(output / "log.txt").read()


def test_results_summary_nests_one_or_several_datasets():
    # EvalHook's flattened storage keys, back in DefaultTrainer.test's layouts
    one = {"segm/AP50": 40.0, "lesion/dice": 70.0, "segm_TTA/AP50": 41.0, "lr": 0.02}
    assert nest_eval_results(one) == {
        "segm": {"AP50": 40.0},
        "lesion": {"dice": 70.0},
        "segm_TTA": {"AP50": 41.0},
    }
    several = {
        "ct_lesion_medseg100_val/segm/AP50": 45.0,
        "ct_lesion_covid19_ct_seg_val/lesion/dice": 70.0,
        "ct_lesion_covid19_ct_seg_val_TTA/lesion/dice": 71.0,
        "total_loss": 0.5,
        "ct_lesion_medseg100_val/unknown_task/x": 1.0,
    }
    assert nest_eval_results(several) == {
        "ct_lesion_medseg100_val": {"segm": {"AP50": 45.0}},
        "ct_lesion_covid19_ct_seg_val": {"lesion": {"dice": 70.0}},
        "ct_lesion_covid19_ct_seg_val_TTA": {"lesion": {"dice": 71.0}},
    }
