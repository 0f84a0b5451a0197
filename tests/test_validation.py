"""Dataset validation (ct_lesion_d2.data.validation, tools/validate_dataset.py) and the checks
run when a converted lesion dataset is loaded."""

import importlib.util
import json
import os
import shutil

import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from ct_lesion_d2.data.converters import convert_layout
from ct_lesion_d2.data.datasets import register_ct_classification
from ct_lesion_d2.data.datasets.builtin import load_ct_lesion_coco
from ct_lesion_d2.data.io import DatasetFormatError
from ct_lesion_d2.data.validation import (
    ValidationReport,
    validate_coco_files,
    validate_datasets,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
H, W = 40, 50


def _tool_main():
    spec = importlib.util.spec_from_file_location(
        "validate_dataset", os.path.join(REPO, "tools", "validate_dataset.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _png(path, seed):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    array = np.random.default_rng(seed).integers(0, 256, (H, W), dtype=np.uint8)
    Image.fromarray(array).save(path)


def _rle(mask):
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _write_coco(path, images, annotations=(), root=None):
    coco = {
        "info": {"image_root": root or os.path.dirname(os.path.dirname(path))},
        "categories": [{"id": 1, "name": "Lesion"}],
        "images": images,
        "annotations": list(annotations),
    }
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(coco, f)
    return path


def _image(image_id, name, group=None):
    entry = {"id": image_id, "file_name": name, "height": H, "width": W}
    if group is not None:
        entry["group"] = group
    return entry


def _ann(ann_id, image_id, mask=None, bbox=(5.0, 5.0, 10.0, 10.0)):
    if mask is None:
        mask = np.zeros((H, W), bool)
        mask[5:15, 5:15] = True
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": 1,
        "iscrowd": 0,
        "bbox": list(bbox),
        "area": float(mask.sum()),
        "segmentation": _rle(mask),
    }


@pytest.fixture
def three_images(tmp_path):
    for i, name in enumerate(("a.png", "b.png", "c.png")):
        _png(str(tmp_path / name), seed=i)
    shutil.copy(tmp_path / "a.png", tmp_path / "a_copy.png")  # same bytes, another name
    return tmp_path


def test_clean_splits_pass_and_count(three_images):
    root = str(three_images)
    images = [_image(1, "a.png", "s1"), _image(2, "b.png", "s1")]
    train = _write_coco(f"{root}/ann/train.json", images, [_ann(1, 1), _ann(2, 1)], root)
    val = _write_coco(f"{root}/ann/val.json", [_image(1, "c.png", "s2")], [], root)
    report = validate_coco_files([train, val], progress=False)
    assert report.ok, report.summary()
    assert report.counts["train"] == {"images": 2, "Lesion": 2, "no instance": 1, "scans": 1}
    assert report.counts["val"] == {"images": 1, "no instance": 1, "scans": 1}
    table = report.table().splitlines()
    assert table[0].split() == ["split", "images", "Lesion", "no", "instance", "scans"]
    assert table[1].split() == ["train", "2", "2", "1", "1"]
    assert table[2].split() == ["val", "1", "0", "1", "1"]


def test_file_content_and_scan_in_two_splits(three_images):
    root = str(three_images)
    train_images = [_image(1, "a.png", "s1"), _image(2, "b.png", "s2")]
    val_images = [_image(1, "b.png", "s3"), _image(2, "a_copy.png", "s4"), _image(3, "c.png", "s1")]
    train = _write_coco(f"{root}/ann/train.json", train_images, root=root)
    val = _write_coco(f"{root}/ann/val.json", val_images, root=root)
    report = validate_coco_files([train, val], progress=False)
    assert report.errors[os.path.join(root, "b.png")] == ["in two splits: train and val"]
    copy = report.errors[os.path.join(root, "a_copy.png")][0]
    assert copy.startswith("same content as " + os.path.join(root, "a.png"))
    assert report.errors["scan 's1'"] == ["in 2 splits: train (a.png), val (c.png)"]
    assert len(report.errors) == 3
    assert "FAILED: 3 file(s) with errors" in report.summary()


@pytest.mark.parametrize(
    "annotation, problem",
    [
        (_ann(1, 1, bbox=(45.0, 5.0, 10.0, 10.0)), "outside the image of 50x40"),
        (_ann(1, 1, bbox=(5.0, 5.0, 0.0, 10.0)), "empty box"),
        (_ann(1, 1, mask=np.zeros((H, W), bool)), "empty mask"),
        (_ann(1, 1, mask=np.ones((H + 1, W), bool)), "mask size [41, 50]"),
        (dict(_ann(1, 1), segmentation=[]), "no polygon"),
        (dict(_ann(1, 1), category_id=7), "category id 7 is not in categories"),
    ],
)
def test_bad_annotations_are_errors_of_the_json(three_images, annotation, problem):
    root = str(three_images)
    train = _write_coco(f"{root}/ann/train.json", [_image(1, "a.png")], [annotation], root)
    report = validate_coco_files([train], decode=False, progress=False)
    assert list(report.errors) == [train]
    assert problem in report.errors[train][0]
    with pytest.raises(DatasetFormatError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        load_ct_lesion_coco(train)  # the same check when the dataset is loaded


def test_declared_size_differs_from_the_image(three_images):
    root = str(three_images)
    entry = dict(_image(1, "a.png"), height=H + 2)
    train = _write_coco(f"{root}/ann/train.json", [entry], root=root)
    report = validate_coco_files([train], progress=False)
    assert (
        "image is 50x40 (width x height) but the annotations say 50x42"
        in report.errors[os.path.join(root, "a.png")][0]
    )


def test_not_json_and_not_coco(tmp_path):
    broken = tmp_path / "train.json"
    broken.write_text("{not json")
    other = tmp_path / "val.json"
    other.write_text(json.dumps({"images": []}))
    report = validate_coco_files([str(broken), str(other)], progress=False)
    assert "not valid JSON" in report.errors[str(broken)][0]
    assert "not a COCO instance file" in report.errors[str(other)][0]


def _binary_layout(root, n=4):
    mask = np.zeros((H, W), np.uint8)
    mask[5:20, 5:20] = 1
    os.makedirs(os.path.join(root, "masks"))
    for i in range(n):
        _png(os.path.join(root, "images", f"s{i}.png"), seed=i)
        Image.fromarray(mask).save(os.path.join(root, "masks", f"s{i}.png"))
    return root


def test_converted_splits_from_two_conversions_are_refused(tmp_path):
    src = _binary_layout(str(tmp_path / "src"))
    first = convert_layout("binary-folder", src, str(tmp_path / "a"), val_fraction=0.5)
    second = convert_layout("binary-folder", src, str(tmp_path / "b"), val_fraction=0.5)
    assert len(load_ct_lesion_coco(first["train"])) == 2
    # what an --overwrite killed between its two renames would leave: a new val, an old train
    shutil.copy(second["val"], first["val"])
    with pytest.raises(DatasetFormatError, match="another conversion"):
        load_ct_lesion_coco(first["train"])


def test_real_medseg100_validates(shared_data, tmp_path):
    src = os.path.join(shared_data, "medseg100")
    outputs = convert_layout("binary-folder", src, str(tmp_path / "coco"))
    report = validate_coco_files([outputs["train"], outputs["val"]], progress=False)
    assert report.ok, report.summary()
    for split, path in outputs.items():
        with open(path) as f:
            coco = json.load(f)
        assert report.counts[split]["images"] == len(coco["images"])
        assert report.counts[split]["Lesion"] == len(coco["annotations"])
    assert report.counts["train"]["images"] + report.counts["val"]["images"] == 80


def test_registered_classification_datasets_share_no_group(tmp_path):
    for i in range(3):
        _png(str(tmp_path / f"{i}.png"), seed=i)
    records = {
        "ct_test_val_a": [
            {"file_name": str(tmp_path / "0.png"), "class_id": 0, "group": "p1"},
            {"file_name": str(tmp_path / "1.png"), "class_id": 1, "group": "p2"},
        ],
        "ct_test_val_b": [{"file_name": str(tmp_path / "2.png"), "class_id": 5, "group": "p1"}],
    }
    try:
        for name, recs in records.items():
            register_ct_classification(name, lambda recs=recs: recs, ["no", "yes"])
        report = validate_datasets(list(records) + ["ct_test_not_registered"], progress=False)
    finally:
        for name in records:
            DatasetCatalog.pop(name)
            MetadataCatalog.pop(name)
    assert report.errors["group 'p1'"][0].startswith("in 2 splits")
    assert "class id 5 not in 0..1" in report.errors[str(tmp_path / "2.png")][0]
    assert report.errors["dataset 'ct_test_not_registered'"] == ["not registered"]
    assert report.counts["ct_test_val_a"] == {"images": 2, "no": 1, "yes": 1, "groups": 2}


def test_tool_exit_codes(three_images, capsys):
    validate_main = _tool_main()
    root = str(three_images)
    good = _write_coco(f"{root}/ann/train.json", [_image(1, "a.png")], [_ann(1, 1)], root)
    assert validate_main(["--no-progress", "coco", good]) == 0
    assert "OK: no errors" in capsys.readouterr().out
    bad = _write_coco(f"{root}/ann/val.json", [_image(1, "a.png")], [_ann(1, 2)], root)
    assert validate_main(["--no-progress", "coco", good, bad]) == 1
    out = capsys.readouterr().out
    assert "dangling" in out and "in two splits: train and val" in out


def test_report_lists_a_file_once_with_all_its_problems():
    report = ValidationReport()
    report.error("x.png", "too small")
    report.error("x.png", "unreadable")
    report.error("x.png", "too small")
    assert report.errors == {"x.png": ["too small", "unreadable"]}
    with pytest.raises(DatasetFormatError, match="1 bad file"):
        report.raise_if_errors("dataset.json")
