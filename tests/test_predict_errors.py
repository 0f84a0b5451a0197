"""tools/predict.py on the mistakes users make: one line naming the file or option and the fix,
exit status 1 (2 for usage errors), no traceback, nothing written."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model
from PIL import Image

from ct_lesion_d2.analysis import predict
from ct_lesion_d2.model_zoo import get_config, zoo_models

TOOLS = os.path.join(os.path.dirname(__file__), "..", "tools")

SMALL = [
    "MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "128",
    "MODEL.RPN.POST_NMS_TOPK_TEST", "30", "TEST.DETECTIONS_PER_IMAGE", "4", "DATASETS.TEST", "()",
]  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """(config, weights, classifier config) of random-weight models."""
    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    cfg = get_config("mask_rcnn_R18_T2", SMALL)
    config, weights = str(folder / "seg.yaml"), str(folder / "seg.pth")
    torch.save({"model": build_model(cfg).state_dict()}, weights)
    open(config, "w").write(cfg.dump())
    classifier = str(folder / "cls.yaml")
    open(classifier, "w").write(get_config("classifier_R18_T2", SMALL).dump())
    return config, weights, classifier


@pytest.fixture
def slice_png(tmp_path):
    path = tmp_path / "slice.png"
    Image.fromarray(np.full((64, 72), 80, np.uint8)).save(path)
    return str(path)


def run(model, inputs, output, *extra, config=None, weights=None):
    argv = ["--config-file", config or model[0], "--weights", weights or model[1]]
    argv += ["--input", *inputs, "--output", str(output), "--no-progress", *extra]
    with pytest.raises(SystemExit) as e:
        predict.main(argv)
    return e.value.code


def test_missing_and_truncated_weights(model, slice_png, tmp_path):
    out, missing = tmp_path / "out", str(tmp_path / "none.pth")
    code = run(model, [slice_png], out, weights=missing)
    assert code == f"error: {missing}: weights file not found (MODEL.WEIGHTS or --weights)"
    cut = tmp_path / "cut.pth"
    cut.write_bytes(open(model[1], "rb").read()[:4096])
    code = run(model, [slice_png], out, weights=str(cut))
    assert code.startswith(f"error: {cut}: not a readable checkpoint (truncated, or not a ")
    assert not out.exists()


def test_config_file_missing_typo_and_classifier_as_segmenter(model, slice_png, tmp_path):
    out = tmp_path / "out"
    assert run(model, [slice_png], out, config="nope.yaml") == (
        "error: nope.yaml: config file not found"
    )
    code = run(model, [slice_png], out, "MODEL.ROI_HEADS.NUM_CLASES", "2")
    assert code == (
        f"error: {model[0]}: no config key MODEL.ROI_HEADS.NUM_CLASES (in the file or the "
        "overrides); did you mean MODEL.ROI_HEADS.NUM_CLASSES?"
    )
    assert run(model, [slice_png], out, config=model[2]) == (
        f"error: {model[2]}: a CTMaskNetClassifier config without masks (MODEL.MASK_ON False); "
        "give a segmentation config as --config-file and a classifier config as "
        "--classifier-config"
    )
    assert not out.exists()


def test_zoo_classifier_and_a_classifier_config_refused_together(model, slice_png, tmp_path):
    name = zoo_models("classification")[0]
    code = run(model, [slice_png], tmp_path / "out", "--classifier-model", name,
               "--classifier-config", model[2])  # fmt: skip
    assert code == (
        "error: give either --classifier-model (a zoo classifier) or "
        "--classifier-config/--classifier-weights, not both"
    )
    assert not (tmp_path / "out").exists()


def test_output_that_is_a_file(model, slice_png, tmp_path):
    target = tmp_path / "report.txt"
    target.write_text("keep")
    code = run(model, [slice_png], target)
    assert code == f"error: --output {target} is a file; give a folder (made if missing)"
    assert target.read_text() == "keep"


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--batch-size", "0", "argument --batch-size: must be at least 1; got 0"),
        ("--confidence-threshold", "2", "argument --confidence-threshold: must lie between 0 "
         "and 1; got 2"),
    ],
)  # fmt: skip
def test_usage_errors_exit_2(model, slice_png, tmp_path, capsys, option, value, message):
    assert run(model, [slice_png], tmp_path / "out", option, value) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(f"error: {message}")
    assert not (tmp_path / "out").exists()


def test_16_bit_png_refused_end_to_end(model, tmp_path):
    path = tmp_path / "hu1024.png"
    Image.fromarray(np.full((64, 64), 1024, np.uint16)).save(path)
    code = run(model, [str(path)], tmp_path / "out")
    assert code.startswith(f"error: {path}: 16-bit image (PIL mode I;16): the file does not say")
    assert "--input-units hu --hu-offset 1024" in code
    assert not (tmp_path / "out").exists()
    (report,) = predict.main(
        ["--config-file", model[0], "--weights", model[1], "--input", str(path), "--output",
         str(tmp_path / "hu"), "--no-progress", "--input-units", "hu", "--hu-offset", "1024"]
    )  # fmt: skip
    import json

    notes = json.load(open(report))["scan"]["input_notes"]
    assert notes == ["16-bit values read as HU + 1024 (--input-units hu --hu-offset 1024), then "
                     "windowed as DICOM"]  # fmt: skip


def test_ctrl_c_keeps_the_complete_reports(model, slice_png, tmp_path, monkeypatch, capsys):
    second = tmp_path / "second.png"
    Image.fromarray(np.full((64, 72), 60, np.uint8)).save(second)
    original, calls = predict.CTLesionPredictor.predict_scan, []

    def interrupted(self, scan, *args, **kwargs):
        calls.append(scan.source)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(self, scan, *args, **kwargs)

    monkeypatch.setattr(predict.CTLesionPredictor, "predict_scan", interrupted)
    out = tmp_path / "out"
    assert run(model, [slice_png, str(second)], out) == 130
    kept = str(out / "slice" / "report.json")
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"interrupted: 1 complete reports kept ({kept}); the scan in progress left nothing"
    )
    assert sorted(os.listdir(out)) == ["slice"]


def test_one_line_without_traceback_or_warnings(model, slice_png, tmp_path):
    """The real entry point: stderr is the one error line, not a preamble."""
    missing = str(tmp_path / "none.pth")
    result = subprocess.run(
        [sys.executable, os.path.join(TOOLS, "predict.py"), "--config-file", model[0],
         "--weights", missing, "--input", slice_png, "--output", str(tmp_path / "out")],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: {missing}: weights file not found (MODEL.WEIGHTS or --weights)"
    ]
