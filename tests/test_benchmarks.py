"""The benchmark tools run end to end and report every mode they were asked for.

Speed is measured by `make benchmark` (docs/BENCHMARKS.md), never asserted here: these tests
check that the tools work, on one small model, one run each.
"""

import json

import pytest

from ct_lesion_d2.benchmark import classification as benchmark_classifier
from ct_lesion_d2.benchmark import segmentation as benchmark_seg
from ct_lesion_d2.benchmark.stages import STAGES

pytestmark = pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
QUICK = ["--size", "128", "--warmup", "0", "--runs", "1", "--throughput-batch", "1", "--no-flops"]


def test_benchmark_seg_reports_each_mode_and_training(tmp_path, capsys):
    out = tmp_path / "seg.json"
    benchmark_seg.main(
        [
            "--models",
            "mask_rcnn_R18_T2",
            "--modes",
            "eager",
            "optimized",
            "onnxruntime",
            "--detections",
            "4",
            "--train-iters",
            "1",
            "--train-warmup",
            "0",
            "--stages",
            "--json",
            str(out),
        ]
        + QUICK
    )
    report = json.loads(out.read_text())
    (model,) = report["models"]
    modes = {m["mode"]: m for m in model["modes"]}
    assert set(modes) == {"eager", "optimized", "onnxruntime"}
    for m in modes.values():
        assert len(m["inference_s"]) == 1 and m["throughput"] > 0 and m["peak_mib"] >= 0
        assert m["detections"] == [4]  # --detections fixes the count
    assert len(model["train_s"]) == 1 and model["train_median"] > 0
    assert set(model["stages"]) >= {"backbone", "rpn", "mask", "paste"}
    assert list(model["stages"]) == list(STAGES) and all(v > 0 for v in model["stages"].values())
    assert "| mask_rcnn_R18_T2 | onnxruntime |" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # an existing --json is refused before any work
        benchmark_seg.main(["--models", "mask_rcnn_R18_T2", "--json", str(out)] + QUICK)
    assert "exists; pass --overwrite" in capsys.readouterr().err


def test_benchmark_classifier_volume_reports_agreement(tmp_path):
    out = tmp_path / "cls.json"
    benchmark_classifier.main(
        [
            "--models",
            "--volume-slices",
            "3",
            "--volume-runs",
            "eager:1",
            "optimized:1:2",
            "--json",
            str(out),
        ]
        + QUICK
    )
    volume = json.loads(out.read_text())["volume"]
    passes = volume["passes"]
    assert volume["slices"] == 3
    assert [(p["mode"], p["workers"]) for p in passes] == [("eager", 1), ("optimized", 2)]
    for p in passes:
        assert len(p["detections"]) == len(p["class_probs"]) == 3
        assert p["same_classes_as_first"] == 3  # the optimised model keeps the classes
