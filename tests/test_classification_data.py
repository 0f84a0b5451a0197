"""Slice classification data: COVIDx-CT split files, per-class sample, UCSD group split, mapper."""

import os

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from ct_lesion_d2 import add_ct_lesion_config
from ct_lesion_d2.data import (
    ClassificationDatasetMapper,
    DatasetFormatError,
    list_class_folders,
    parse_covidx_split,
    sample_per_class,
    split_records_by_group,
)
from ct_lesion_d2.data.classification import IMAGE_EXTENSIONS, source_group
from ct_lesion_d2.data.datasets import register_ct_classification
from ct_lesion_d2.data.datasets.classification import load_covidx_split, load_ucsd_split

COVIDX_NAMES = ["Normal_1_10_0003.png", "CP_7_3143_0044.png", "NCP_96_1328_0032.png"]
UCSD_FOLDERS = ("CT_NonCOVID", "CT_COVID")


def _covidx(tmp_path, lines):
    """Write tiny slices for ``COVIDX_NAMES`` and a split file with ``lines``."""
    image_dir = tmp_path / "2A_images"
    image_dir.mkdir(exist_ok=True)
    for name in COVIDX_NAMES + ["radiopaedia_case_12.png"]:
        Image.fromarray(np.zeros((29, 37), np.uint8)).save(image_dir / name)
    split_file = tmp_path / "val_COVIDx_CT-1.txt"
    split_file.write_text("".join(line + "\n" for line in lines))
    return str(split_file), str(image_dir)


def test_parse_covidx_split(tmp_path):
    lines = [f"{n} {c} 2 3 30 25" for c, n in enumerate(COVIDX_NAMES)]
    split_file, image_dir = _covidx(tmp_path, lines + ["", "radiopaedia_case_12.png 2 0 0 37 29"])
    records = parse_covidx_split(split_file, image_dir)
    assert [r["class_id"] for r in records] == [0, 1, 2, 2]
    assert [r["patient"] for r in records] == ["Normal_1", "CP_7", "NCP_96", "radiopaedia_case_12"]
    assert records[0]["crop"] == [2, 3, 30, 25]
    assert records[1]["file_name"] == os.path.join(image_dir, COVIDX_NAMES[1])
    assert records[2]["image_id"] == COVIDX_NAMES[2]


@pytest.mark.parametrize(
    "bad_line, problem",
    [
        ("NCP_96_1328_0032.png 3 2 3 30 25", "class 3"),
        ("NCP_96_1328_0099.png 2 2 3 30 25", "image not found"),
        ("NCP_96_1328_0032.png 2 2 3 30", "expected 6 fields"),
        ("NCP_96_1328_0032.png 2 2 3 30.5 25", "must be integers"),
        ("NCP_96_1328_0032.png two 2 3 30 25", "must be integers"),
        ("NCP_96_1328_0032.png 2 30 3 30 25", "empty crop box"),
    ],
)
def test_parse_covidx_split_errors(tmp_path, bad_line, problem):
    split_file, image_dir = _covidx(tmp_path, [f"{COVIDX_NAMES[0]} 0 0 0 37 29", bad_line])
    with pytest.raises(DatasetFormatError) as info:
        parse_covidx_split(split_file, image_dir)
    message = str(info.value)
    assert split_file in message and "line 2" in message and problem in message
    if problem == "image not found":
        assert os.path.join(image_dir, "NCP_96_1328_0099.png") in message


def test_missing_covidx_split_names_expected_path(tmp_path):
    with pytest.raises(DatasetFormatError, match="train_COVIDx_CT-1.txt") as info:
        load_covidx_split(str(tmp_path), "train", per_class=1000)
    assert os.path.join(str(tmp_path), "COVIDx-CT", "2A_images") in str(info.value)


def test_sample_per_class_reproducible_and_balanced():
    records = [
        {"file_name": f"{c}_{i:03d}.png", "class_id": c}
        for c, count in enumerate((40, 3, 25))
        for i in range(count)
    ]
    sample = sample_per_class(records, per_class=10, seed=0)
    counts = np.bincount([r["class_id"] for r in sample])
    assert counts.tolist() == [10, 3, 10]
    assert sample == sample_per_class(list(reversed(records)), per_class=10, seed=0)
    assert sample == sorted(sample, key=lambda r: (r["class_id"], r["file_name"]))
    assert sample != sample_per_class(records, per_class=10, seed=1)


@pytest.mark.parametrize(
    "stem, group",
    [
        ("2020.03.01.20029769-p21-73_1%2", "2020.03.01.20029769"),
        ("2020.03.21.20040691-p18-6-6", "2020.03.21.20040691"),
        ("med-9780198814924-chapter-17-p10-515", "med-9780198814924-chapter-17"),
        (
            "Talaromyces-marneffei-infection-relapse-presenting-as-ost_2020_International-p1-12%0",
            "Talaromyces-marneffei-infection-relapse-presenting-as-ost_2020_International",
        ),
        ("PIIS0140673620302117_2", "PIIS0140673620302117"),
        ("14%2", "14"),
        ("1029", "1029"),
    ],
)
def test_source_group(stem, group):
    assert source_group(stem) == group


def test_ucsd_real_sample_group_split(shared_data):
    root = os.path.join(shared_data, "ucsd_covid_ct")
    records = list_class_folders(root, UCSD_FOLDERS)
    num_files = sum(
        os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS and not n.startswith(".")
        for folder in UCSD_FOLDERS
        for n in os.listdir(os.path.join(root, folder))
    )
    assert len(records) == num_files
    assert {r["class_id"] for r in records} == {0, 1}
    splits = split_records_by_group(records, val_fraction=0.15, test_fraction=0.15, seed=0)
    assert sum(len(s) for s in splits.values()) == len(records)
    groups = {name: {r["group"] for r in split} for name, split in splits.items()}
    assert not groups["train"] & groups["val"]
    assert not groups["train"] & groups["test"] and not groups["val"] & groups["test"]
    for split in splits.values():
        assert {r["class_id"] for r in split} == {0, 1}
    assert splits["val"] == load_ucsd_split(shared_data, "val")


def test_missing_class_folder(tmp_path):
    (tmp_path / "CT_NonCOVID").mkdir()
    with pytest.raises(DatasetFormatError, match="CT_COVID"):
        list_class_folders(str(tmp_path), UCSD_FOLDERS)


def test_register_ct_classification():
    name = "ct_test_classification_tmp"
    records = [{"file_name": "a.png", "image_id": "a", "class_id": 1}]
    try:
        register_ct_classification(name, lambda: records, ["no", "yes"])
        register_ct_classification(name, lambda: [], ["no", "yes"])  # second call: no-op
        assert DatasetCatalog.get(name) == records
        meta = MetadataCatalog.get(name)
        assert meta.thing_classes == ["no", "yes"] and meta.evaluator_type == "ct_classification"
    finally:
        DatasetCatalog.pop(name)
        MetadataCatalog.pop(name)
    assert "ct_covidx_train" in DatasetCatalog.list() and "ct_ucsd_test" in DatasetCatalog.list()


def _write_slices(folder):
    """Slices of 49x61 (height x width) in four encodings; returns name -> path."""
    grey = np.tile(np.arange(61, dtype=np.uint8) * 4, (49, 1))
    rgb = np.stack([grey, grey // 2, 255 - grey], axis=-1)
    images = {
        "grey8.png": Image.fromarray(grey),
        "grey16.png": Image.fromarray(grey.astype(np.uint16) * 200),
        "rgb.jpg": Image.fromarray(rgb),
        "rgba.png": Image.fromarray(np.dstack([rgb, np.full_like(grey, 255)]), "RGBA"),
    }
    paths = {}
    for name, image in images.items():
        paths[name] = os.path.join(folder, name)
        image.save(paths[name])
    return paths


def _cfg(**input_keys):
    cfg = get_cfg()
    add_ct_lesion_config(cfg)
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 98, 1000
    for key, value in input_keys.items():
        setattr(cfg.INPUT, key, value)
    return cfg


def test_mapper_reads_any_slice(tmp_path):
    mapper = ClassificationDatasetMapper(_cfg(), is_train=False)
    for name, path in _write_slices(str(tmp_path)).items():
        out = mapper({"file_name": path, "image_id": name, "class_id": 2})
        image = out["image"]
        assert image.dtype == torch.float32 and image.shape == (3, 98, 122), name
        assert torch.equal(image[0], image[1]) and torch.equal(image[0], image[2]), name
        assert (out["height"], out["width"], out["class_id"]) == (49, 61, 2)
        assert out["image_id"] == name and out["file_name"] == path
        assert 0 <= image.min() and image.max() <= 255 and image.max() > 100, name


def test_mapper_keeps_grey_values_and_crops(tmp_path):
    path = _write_slices(str(tmp_path))["grey8.png"]
    record = {"file_name": path, "image_id": "g", "class_id": 0, "crop": [10, 5, 30, 45]}
    cfg = _cfg(MIN_SIZE_TEST=49, MAX_SIZE_TEST=1000)
    out = ClassificationDatasetMapper(cfg, is_train=False)(record)
    assert out["image"].shape == (3, 49, 61)
    assert torch.equal(out["image"][0], torch.from_numpy(np.array(Image.open(path), np.float32)))
    cfg.INPUT.CT_CLASSIFIER_CROP = True
    out = ClassificationDatasetMapper(cfg, is_train=False)(record)
    assert (out["height"], out["width"]) == (40, 20) and out["crop"] == [10, 5, 30, 45]
    assert out["image"].shape == (3, 98, 49)
    assert float(out["image"][0, 0, 0]) == 40.0  # column 10 of the 4-per-column ramp


def test_mapper_train_resize_and_flip(tmp_path):
    path = _write_slices(str(tmp_path))["grey8.png"]
    cfg = _cfg(MIN_SIZE_TRAIN=(49,), MAX_SIZE_TRAIN=1000, RANDOM_FLIP="horizontal")
    mapper = ClassificationDatasetMapper(cfg, is_train=True)
    firsts = {
        float(mapper({"file_name": path, "class_id": 1})["image"][0, 0, 0]) for _ in range(40)
    }
    assert firsts == {0.0, 240.0}  # the ramp's left end, unflipped and flipped
