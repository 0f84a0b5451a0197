"""The MONAI U-Net baseline: a few iterations on tiny synthetic slices, resumed, then scored."""

import json
import os
import subprocess
import sys

import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode
from PIL import Image

pytest.importorskip("monai", reason="MONAI is an optional benchmark extra (requirements-bench.txt)")

from ct_lesion_d2.benchmark.unet_baseline import RESULTS_FILE, run_unet_baseline

NAME = "ct_lesion_test_unet_tiny"
H, W = 45, 53
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_records(folder):
    rng = np.random.default_rng(0)
    records = []
    yy, xx = np.mgrid[:H, :W]
    for i in range(4):
        image = rng.integers(20, 60, (H, W)).astype(np.uint8)
        anns = []
        if i < 3:  # the last slice has no lesion
            cy, cx = 12 + 6 * i, 15 + 7 * i
            lesion = (((yy - cy) / 7.0) ** 2 + ((xx - cx) / 9.0) ** 2 <= 1).astype(np.uint8)
            image[lesion > 0] = 200
            rle = mask_util.encode(np.asfortranarray(lesion))
            rle["counts"] = rle["counts"].decode("ascii")
            anns.append(
                {
                    "bbox": mask_util.toBbox(rle).tolist(),
                    "bbox_mode": BoxMode.XYWH_ABS,
                    "segmentation": rle,
                    "category_id": 0,
                    "iscrowd": 0,
                }
            )
        path = os.path.join(folder, f"slice_{i}.png")
        Image.fromarray(image).save(path)
        records.append(
            {"file_name": path, "image_id": i, "height": H, "width": W, "annotations": anns}
        )
    return records


@pytest.fixture
def tiny_dataset(tmp_path):
    records = tiny_records(str(tmp_path))
    DatasetCatalog.register(NAME, lambda: records)
    MetadataCatalog.get(NAME).set(thing_classes=["Lesion"])
    yield NAME
    DatasetCatalog.pop(NAME)
    MetadataCatalog.pop(NAME)


def opts(name):
    return [
        "MODEL.DEVICE",
        "cpu",
        "SEED",
        "0",
        "DATASETS.TRAIN",
        f"('{name}',)",
        "DATASETS.TEST",
        f"('{name}',)",
        "DATALOADER.CT_DATASET_REPEAT",
        "()",
        "DATALOADER.NUM_WORKERS",
        "0",
        "INPUT.MIN_SIZE_TRAIN",
        "(48, 64)",
        "INPUT.MAX_SIZE_TRAIN",
        "96",
        "INPUT.MIN_SIZE_TEST",
        "48",
        "INPUT.MAX_SIZE_TEST",
        "96",
    ]


def test_trains_resumes_and_scores(tiny_dataset, tmp_path):
    out = str(tmp_path / "unet")
    small = {"opts": opts(tiny_dataset), "channels": (4, 8, 16), "num_res_units": 1}
    first = run_unet_baseline(out, minutes=5.0, max_iter=3, **small)
    assert first["iterations"] == 3
    with open(os.path.join(out, RESULTS_FILE)) as f:
        written = json.load(f)
    lesion = written["results"][tiny_dataset]
    for key in (
        "dice",
        "dice_per_slice",
        "pixel_precision",
        "pixel_recall",
        "lesion_sensitivity",
        "lesion_precision",
        "num_slices",
    ):
        assert key in lesion
    assert lesion["num_slices"] == 4 and lesion["num_gt_lesions"] == 3
    assert written["score_thresh"] == 0.5 and written["units"] == "percent"
    per_slice = os.path.join(out, "inference", tiny_dataset, "lesion_per_slice.json")
    with open(per_slice) as f:
        assert len(json.load(f)["slices"]) == 4

    resumed = run_unet_baseline(out, minutes=5.0, max_iter=5, resume=True, **small)
    assert resumed["iterations"] == 5 and resumed["train_minutes"] >= first["train_minutes"]
    scored = run_unet_baseline(out, eval_only=True, **small)
    assert scored["iterations"] == 5
    assert scored["results"] == resumed["results"]  # the same weights, scored again


def test_eval_only_without_checkpoint_says_so(tiny_dataset, tmp_path):
    with pytest.raises(FileNotFoundError, match="no U-Net checkpoint"):
        run_unet_baseline(
            str(tmp_path / "none"), opts=opts(tiny_dataset), eval_only=True, channels=(4, 8, 16)
        )


def test_tool_help_runs():
    tool = os.path.join(REPO, "tools", "train_unet_baseline.py")
    result = subprocess.run(
        [sys.executable, tool, "--help"],
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": REPO},
    )
    assert result.returncode == 0, result.stderr
    for flag in ("--minutes", "--output", "--resume", "--eval-only"):
        assert flag in result.stdout
