"""The bad-input suite: each bad file gives a correct result or a clear error naming the file and
the problem, at every entry point that reads it, and no entry point leaves partial output.

Entry points: ``read_grey_image`` / ``read_label_mask``, the converters
(``convert_layout``), the loader run at registration (``load_ct_lesion_coco``), the training
mapper (``CTLesionDatasetMapper`` inside ``SeededMapDataset``), ``validation`` and the
command line tools. The DICOM and NIfTI cases are in ``test_bad_scan_inputs.py``.
"""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from detectron2.config import get_cfg
from detectron2.data.detection_utils import read_image
from detectron2.data.transforms import ResizeShortestEdge
from PIL import Image

from ct_lesion_d2 import add_ct_lesion_config
from ct_lesion_d2.data.build import SeededMapDataset
from ct_lesion_d2.data.classification import parse_covidx_split
from ct_lesion_d2.data.converters import convert_layout
from ct_lesion_d2.data.datasets.builtin import load_ct_lesion_coco
from ct_lesion_d2.data.io import DatasetFormatError
from ct_lesion_d2.data.mappers import CTLesionDatasetMapper
from ct_lesion_d2.data.readers import read_grey_image, read_label_mask
from ct_lesion_d2.data.validation import validate_coco_files, validate_covidx, validate_layout

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
H, W = 64, 80  # odd-shaped slices, so that width/height swaps show


def _slice(height=H, width=W, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width), dtype=np.uint8)


def _encode(array, fmt, mode=None, **kwargs):
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _corrupt_middle(data):
    """Invert 64 bytes in the middle of the file (inside the image data)."""
    mid = len(data) // 2
    return data[:mid] + bytes(b ^ 0xFF for b in data[mid : mid + 64]) + data[mid + 64 :]


def _lesion_mask(height, width):
    mask = np.zeros((height, width), np.uint8)
    top, left = height // 4, width // 4
    mask[top : top + max(1, height // 3), left : left + max(1, width // 3)] = 1
    return mask


# name -> (file name, bytes, (height, width) or None, expected problem or None for "reads")
IMAGE_CASES = {
    "corrupt_png": (
        "s.png",
        lambda: _corrupt_middle(_encode(_slice(), "PNG")),
        None,
        "cannot read image",
    ),
    "truncated_png": ("s.png", lambda: _encode(_slice(), "PNG")[:300], None, "truncated"),
    "corrupt_jpeg": (
        "s.jpg",
        lambda: _corrupt_middle(_encode(_slice(), "JPEG", quality=90)),
        None,
        "corrupt JPEG data",
    ),
    "truncated_jpeg": (
        "s.jpg",
        lambda: _encode(_slice(), "JPEG", quality=90)[:400],
        None,
        "truncated",
    ),
    "zero_byte": ("s.png", lambda: b"", None, "empty file, 0 bytes"),
    "png_16_bit": ("s.png", lambda: _encode(_slice().astype(np.uint16) * 200, "PNG"), (H, W), None),
    "rgba": (
        "s.png",
        lambda: _encode(
            np.dstack([_slice()] * 3 + [np.full((H, W), 128, np.uint8)]), "PNG", "RGBA"
        ),
        (H, W),
        None,
    ),
    "one_pixel": ("s.png", lambda: _encode(np.full((1, 1), 90, np.uint8), "PNG"), (1, 1), None),
    "4096_square": (
        "s.png",
        lambda: _encode(_slice(4096, 4096), "PNG", compress_level=1),
        (4096, 4096),
        None,
    ),
}


def _write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def _layout_with(tmp_path, image_name, image_bytes, mask):
    """A binary-folder layout: the case's image ``a_case`` plus one good pair ``b_good``."""
    src = tmp_path / "src"
    stem, ext = os.path.splitext(image_name)
    case_path = str(src / "images" / f"a_case{ext}")
    _write(case_path, image_bytes)
    _write(str(src / "masks" / "a_case.png"), _encode(mask, "PNG"))
    _write(str(src / "images" / "b_good.png"), _encode(_slice(seed=1), "PNG"))
    _write(str(src / "masks" / "b_good.png"), _encode(_lesion_mask(H, W), "PNG"))
    return str(src), case_path


def _written_files(folder):
    return (
        sorted(
            os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs
        )
        if os.path.isdir(folder)
        else []
    )


def _training_mapper():
    cfg = get_cfg()
    add_ct_lesion_config(cfg)
    cfg.INPUT.MASK_FORMAT = "bitmask"
    cfg.INPUT.MIN_SIZE_TRAIN = (128,)
    cfg.INPUT.MAX_SIZE_TRAIN = 256
    return CTLesionDatasetMapper(cfg, True)


def _assert_names(error, path, problem):
    assert str(path) in str(error)
    assert problem in str(error)


@pytest.mark.parametrize("case", sorted(IMAGE_CASES))
def test_bad_image(case, tmp_path):
    name, make, size, problem = IMAGE_CASES[case]
    mask = _lesion_mask(*(size or (H, W)))
    src, path = _layout_with(tmp_path, name, make(), mask)
    out = str(tmp_path / "out")
    mapper = SeededMapDataset(
        [
            {
                "file_name": path,
                "height": (size or (H, W))[0],
                "width": (size or (H, W))[1],
                "image_id": 0,
                "annotations": [],
            }
        ],
        _training_mapper(),
        seed=0,
    )
    report = validate_layout("binary-folder", src, progress=False)
    if problem is not None:
        with pytest.raises(DatasetFormatError) as excinfo:
            read_grey_image(path, strict=True)
        _assert_names(excinfo.value, path, problem)
        with pytest.raises(DatasetFormatError) as excinfo:
            convert_layout("binary-folder", src, out, val_fraction=0.5)
        _assert_names(excinfo.value, path, problem)
        assert _written_files(out) == []  # no partial output, no temporary file left
        assert list(report.errors) == [path] and problem in report.errors[path][0]
        # The training mapper decodes with PIL only, which returns corrupt JPEG data damaged
        # without an error: the converters and the validator (strict) are where it is caught.
        if case != "corrupt_jpeg":
            with pytest.raises(DatasetFormatError) as excinfo:
                mapper[(0, 0)]
            assert path in str(excinfo.value)
        return
    # a correct result everywhere
    image = read_grey_image(path, strict=True)
    assert image.shape == size and image.dtype == np.uint8
    assert report.ok, report.summary()
    outputs = convert_layout("binary-folder", src, out, val_fraction=0.5)
    records = [r for split in ("train", "val") for r in load_ct_lesion_coco(outputs[split])]
    record = next(r for r in records if "a_case" in r["file_name"])
    assert (record["height"], record["width"]) == size
    lesions = len(record.get("annotations", []))
    assert lesions == (0 if size == (1, 1) else 1)  # a 1-pixel lesion is below min_area
    fed = read_image(record["file_name"], format="L")[..., 0]
    if case == "png_16_bit":
        # annotated through an 8-bit copy: what Detectron2 reads is the scaled slice, not a
        # slice clipped at 255
        assert record["file_name"] != path and record["file_name"].endswith(".png")
        np.testing.assert_array_equal(fed, image)
    else:
        assert record["file_name"] == path
    mapped = SeededMapDataset([record], _training_mapper(), seed=0)[(0, 0)]
    # resized as the training config says (short side 128, long side at most 256)
    expected = ResizeShortestEdge.get_output_shape(*size, 128, 256)
    assert tuple(mapped["image"].shape) == (3, *expected)


# name -> (mask, expected problem or None)
MASK_CASES = {
    "values_outside_declared": (lambda: _lesion_mask(H, W) * 3, "unexpected mask values [3]"),
    "wrong_size": (lambda: _lesion_mask(H + 1, W), "differs from image"),
    "empty": (lambda: np.zeros((H, W), np.uint8), None),
}


@pytest.mark.parametrize("case", sorted(MASK_CASES))
def test_bad_mask(case, tmp_path):
    make, problem = MASK_CASES[case]
    src, image_path = _layout_with(tmp_path, "s.png", _encode(_slice(), "PNG"), make())
    mask_path = os.path.join(src, "masks", "a_case.png")
    out = str(tmp_path / "out")
    report = validate_layout("binary-folder", src, progress=False)
    if problem is not None:
        with pytest.raises(DatasetFormatError) as excinfo:
            convert_layout("binary-folder", src, out, val_fraction=0.5)
        _assert_names(excinfo.value, mask_path, problem)
        assert _written_files(out) == []
        assert list(report.errors) == [mask_path] and problem in report.errors[mask_path][0]
        return
    assert read_label_mask(mask_path, (0, 1)).max() == 0
    assert report.ok
    outputs = convert_layout("binary-folder", src, out, val_fraction=0.5)
    records = [r for split in ("train", "val") for r in load_ct_lesion_coco(outputs[split])]
    empty = next(r for r in records if "a_case" in r["file_name"])
    assert empty.get("annotations", []) == []  # kept as a slice without lesion


def _coco(tmp_path, mutate):
    """A valid two-image COCO file with one polygon, changed by ``mutate(coco)``."""
    for name in ("a.png", "b.png"):
        _write(str(tmp_path / "images" / name), _encode(_slice(), "PNG"))
    coco = {
        "info": {"image_root": str(tmp_path / "images")},
        "categories": [{"id": 1, "name": "Lesion"}],
        "images": [
            {"id": i, "file_name": n, "height": H, "width": W}
            for i, n in ((1, "a.png"), (2, "b.png"))
        ],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "iscrowd": 0,
                "area": 100.0,
                "bbox": [10.0, 10.0, 10.0, 10.0],
                "segmentation": [[10.0, 10.0, 20.0, 10.0, 20.0, 20.0, 10.0, 20.0]],
            }
        ],
    }
    mutate(coco)
    path = str(tmp_path / "annotations" / "train.json")
    _write(path, json.dumps(coco).encode())
    return path


# name -> (change to the COCO dict, (what is named: "json" or "image"), expected problem)
COCO_CASES = {
    "missing_image": (
        lambda c: c["images"].append({"id": 3, "file_name": "gone.png", "height": H, "width": W}),
        "image",
        "image file not found",
    ),
    "dangling_annotation": (
        lambda c: c["annotations"].append(dict(c["annotations"][0], id=2, image_id=99)),
        "json",
        "dangling, its image id 99",
    ),
    "polygon_of_two_points": (
        lambda c: c["annotations"][0].update(segmentation=[[10.0, 10.0, 20.0, 20.0]]),
        "json",
        "polygon of 2 point(s)",
    ),
}


@pytest.mark.parametrize("case", sorted(COCO_CASES))
def test_bad_coco_json(case, tmp_path):
    mutate, named, problem = COCO_CASES[case]
    json_file = _coco(tmp_path, mutate)
    subject = str(tmp_path / "images" / "gone.png") if named == "image" else json_file
    before = _written_files(str(tmp_path))
    with pytest.raises(DatasetFormatError) as excinfo:
        load_ct_lesion_coco(json_file, "ct_lesion_test_bad_coco")
    _assert_names(excinfo.value, subject, problem)
    assert "tools/validate_dataset.py coco" in str(excinfo.value)
    report = validate_coco_files([json_file], progress=False)
    assert list(report.errors) == [subject]
    assert any(problem in p for p in report.errors[subject])
    assert _written_files(str(tmp_path)) == before


def test_valid_coco_json_loads(tmp_path):
    """The control of the cases above: unchanged, the file loads and validates."""
    json_file = _coco(tmp_path, lambda c: None)
    records = load_ct_lesion_coco(json_file, "ct_lesion_test_good_coco")
    assert len(records) == 2 and len(records[0]["annotations"]) == 1
    assert validate_coco_files([json_file], progress=False).ok


# name -> (line, expected problem)
COVIDX_CASES = {
    "bad_class": ("NCP_96_1328_0032.png 3 5 4 70 60", "line 2: class 3 not in 0 (Normal)"),
    "too_few_fields": ("NCP_96_1328_0033.png 2 9 94", "line 2: expected 6 fields"),
}


@pytest.mark.parametrize("case", sorted(COVIDX_CASES))
def test_bad_covidx_split_line(case, tmp_path):
    line, problem = COVIDX_CASES[case]
    folder = tmp_path / "COVIDx-CT"
    for name in ("NCP_96_1328_0031.png", "NCP_96_1328_0032.png", "NCP_96_1328_0033.png"):
        _write(str(folder / "2A_images" / name), _encode(_slice(), "PNG"))
    split_file = str(folder / "train_COVIDx_CT-1.txt")
    _write(split_file, f"NCP_96_1328_0031.png 2 5 4 70 60\n{line}\n".encode())
    for split in ("val", "test"):
        _write(str(folder / f"{split}_COVIDx_CT-1.txt"), b"")
    with pytest.raises(DatasetFormatError) as excinfo:
        parse_covidx_split(split_file, str(folder / "2A_images"))
    _assert_names(excinfo.value, split_file, problem)
    report = validate_covidx(str(folder), progress=False)
    assert list(report.errors) == [split_file] and problem in report.errors[split_file][0]
    assert report.counts["train"]["images"] == 1  # the good line is still read


def _run(tool, *args):
    env = dict(os.environ, PYTHONPATH=REPO)
    cmd = [sys.executable, os.path.join(REPO, "tools", tool), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def test_validate_tool_lists_each_bad_file_once(tmp_path):
    src = tmp_path / "src"
    bad = []
    for case, (name, make, size, problem) in sorted(IMAGE_CASES.items()):
        if case == "4096_square":
            continue  # slow and good; covered above
        ext = os.path.splitext(name)[1]
        path = str(src / "images" / f"{case}{ext}")
        _write(path, make())
        _write(str(src / "masks" / f"{case}.png"), _encode(_lesion_mask(*(size or (H, W))), "PNG"))
        if problem:
            bad.append(path)
    _write(str(src / "masks" / "orphan.png"), _encode(_lesion_mask(H, W), "PNG"))
    result = _run("validate_dataset.py", "--no-progress", "layout", "binary-folder", str(src))
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    out = result.stdout
    for path in bad + [str(src / "masks" / "orphan.png")]:
        assert out.count(f"  {path}: ") == 1, path  # listed once
    assert f"FAILED: {len(bad) + 1} file(s) with errors" in out
    assert "split" in out and "images" in out  # the summary table
    assert "one_pixel.png: image is only 1x1 pixels" in out  # a warning, not an error


def test_convert_tool_bad_input_is_one_clear_line_and_writes_nothing(tmp_path):
    truncated = _encode(_slice(), "PNG")[:300]
    src, path = _layout_with(tmp_path, "s.png", truncated, _lesion_mask(H, W))
    out = tmp_path / "out"
    result = _run("convert_dataset.py", "binary-folder", src, "--output", str(out))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr  # one line
    assert errors[0].startswith(f"error: {path}: cannot read image")
    assert _written_files(str(out)) == []


# ----------------------------------------------------------------------------- interruptions


def _snapshot(folder):
    return {name: open(os.path.join(folder, name), "rb").read() for name in _written_files(folder)}


def test_interrupted_overwrite_keeps_the_previous_conversion(tmp_path, monkeypatch):
    # a 16-bit slice, so that an 8-bit copy is written during the conversion, not only JSON
    sixteen_bit = _encode(_slice().astype(np.uint16) * 200, "PNG")
    src, _ = _layout_with(tmp_path, "s.png", sixteen_bit, _lesion_mask(H, W))
    out = str(tmp_path / "out")
    convert_layout("binary-folder", src, out, val_fraction=0.5)
    before = _snapshot(out)
    assert sorted(before) == [
        "annotations/train.json",
        "annotations/val.json",
        "images_8bit/images/a_case.png",
    ]
    import ct_lesion_d2.data.converters as converters

    calls = []

    def interrupted(mask, categories, min_area):  # Ctrl-C on the second slice
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return []

    monkeypatch.setattr(converters, "mask_to_annotations", interrupted)
    with pytest.raises(KeyboardInterrupt):
        convert_layout("binary-folder", src, out, val_fraction=0.5, overwrite=True)
    assert _snapshot(out) == before  # same files, same bytes, no temporary file


def test_interrupted_synthetic_generation_keeps_the_previous_slices(tmp_path, monkeypatch):
    import ct_lesion_d2.data.synthetic as synthetic

    folder = str(tmp_path / "slices")
    synthetic.generate_synthetic_slices(folder, 3, seed=0, size=128, progress=False)
    before = _snapshot(folder)
    render = synthetic._render_slice

    def interrupted(rng, class_id, size):
        if class_id == 2:
            raise KeyboardInterrupt
        return render(rng, class_id, size)

    monkeypatch.setattr(synthetic, "_render_slice", interrupted)
    with pytest.raises(KeyboardInterrupt):
        synthetic.generate_synthetic_slices(
            folder, 3, seed=5, size=128, overwrite=True, progress=False
        )
    assert _snapshot(folder) == before
