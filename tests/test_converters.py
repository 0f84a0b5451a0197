"""Tests of the lesion-mask -> COCO converters (ct_lesion_d2.data.converters, .io,
datasets.builtin).

Hand-made masks check the instance rules (8-connected components, components of 100 px or
fewer merged into the background, label merging, bbox/area/RLE); small layouts written in
tmp_path check the conversion, the split by group, the errors and the no-overwrite rule; the
real samples (``shared_data``) check medseg100 and the transposed medseg_multiclass set.
"""

import json
import os
import subprocess
import sys
import uuid
from collections import OrderedDict

import numpy as np
import pycocotools.mask as mask_util
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image
from scipy import ndimage

from ct_lesion_d2.data.converters import (
    CNCB_MERGED,
    CNCB_SEPARATE,
    TWO_LABEL_SEPARATE,
    convert_layout,
    mask_to_annotations,
)
from ct_lesion_d2.data.datasets.builtin import register_ct_lesion_coco
from ct_lesion_d2.data.io import DatasetFormatError
from ct_lesion_d2.data.splits import split_by_group

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LESION = OrderedDict([("Lesion", (1,))])


# ----------------------------------------------------------------------------- helpers


def _expected_bbox(component):
    """XYWH box of a boolean mask computed directly with numpy."""
    ys, xs = np.nonzero(component)
    return [
        float(xs.min()),
        float(ys.min()),
        float(xs.max() - xs.min() + 1),
        float(ys.max() - ys.min() + 1),
    ]


def _decode(ann):
    return mask_util.decode(ann["segmentation"]).astype(bool)


def _check_ann_matches(ann, component):
    """The annotation describes exactly ``component`` (bbox, area, RLE)."""
    assert ann["area"] == int(component.sum())
    assert ann["bbox"] == _expected_bbox(component)
    assert ann["iscrowd"] == 0
    decoded = _decode(ann)
    assert decoded.shape == component.shape
    assert np.array_equal(decoded, component)
    assert isinstance(ann["segmentation"]["counts"], str)  # JSON-serialisable


def _save_png(arr, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.asarray(arr, dtype=np.uint8)).save(path)


def _save_jpg(arr, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.asarray(arr, dtype=np.uint8), mode="L").save(path, quality=90)


def _ct_like(seed, shape=(64, 64)):
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def _make_cncb(root, num_scans=5, frames=2, size=64):
    """CNCB layout: ``image/<scan>/<frame>.jpg``, ``mask/<scan>/<frame>.png`` (0 bg, 1 lung,
    2 GGO, 3 consolidation). Frame 0 of each scan has a 12x12 GGO square touching a 12x12
    consolidation square (one merged lesion, or one of each when separate); the other frames
    have lung only (no lesion)."""
    for s in range(num_scans):
        scan = f"scan{s:02d}"
        for f in range(frames):
            mask = np.zeros((size, size), np.uint8)
            mask[4:60, 4:60] = 1  # lung field, 3136 px: must never become an instance
            if f == 0:
                mask[10:22, 10:22] = 2  # GGO 144 px
                mask[10:22, 22:34] = 3  # consolidation 144 px, shares an edge with the GGO
            _save_jpg(
                _ct_like(100 * s + f, (size, size)), os.path.join(root, "image", scan, f"{f}.jpg")
            )
            _save_png(mask, os.path.join(root, "mask", scan, f"{f}.png"))
    return root


def _make_binary_folder(root, num=5, size=64):
    """Flat binary layout ``images/<name>.png``, ``masks/<name>.png`` (0/1). Even slices have one
    15x15 lesion, odd slices none."""
    for i in range(num):
        mask = np.zeros((size, size), np.uint8)
        if i % 2 == 0:
            mask[20:35, 20:35] = 1
        _save_png(_ct_like(i, (size, size)), os.path.join(root, "images", f"slice_{i:03d}.png"))
        _save_png(mask, os.path.join(root, "masks", f"slice_{i:03d}.png"))
    return root


def _load(path):
    with open(path) as f:
        return json.load(f)


# ----------------------------------------------------------------------------- mask_to_annotations


def test_min_area_is_exclusive_100_dropped_101_kept():
    mask = np.zeros((50, 60), np.uint8)
    mask[2:12, 2:12] = 1  # exactly 100 px -> background
    mask[30:40, 30:40] = 1  # 100 px ...
    mask[40, 30] = 1  # ... + 1 = 101 px -> kept
    anns = mask_to_annotations(mask, LESION, min_area=100)
    assert len(anns) == 1
    kept = np.zeros(mask.shape, bool)
    kept[30:40, 30:40] = True
    kept[40, 30] = True
    _check_ann_matches(anns[0], kept)
    assert anns[0]["area"] == 101
    assert anns[0]["bbox"] == [30.0, 30.0, 10.0, 11.0]


def test_default_min_area_is_100():
    mask = np.zeros((30, 30), np.uint8)
    mask[0:10, 0:10] = 1
    assert mask_to_annotations(mask, LESION) == []
    mask[10, 0] = 1
    assert len(mask_to_annotations(mask, LESION)) == 1


def test_two_separate_blobs_two_instances_with_hand_checked_boxes():
    mask = np.zeros((80, 120), np.uint8)  # not square: catches x/y swaps
    a = np.zeros(mask.shape, bool)
    a[5:20, 10:40] = True  # 15 rows x 30 cols
    b = np.zeros(mask.shape, bool)
    yy, xx = np.mgrid[:80, :120]
    b[(yy - 55) ** 2 + (xx - 90) ** 2 <= 12**2] = True  # a disc
    mask[a | b] = 1
    anns = mask_to_annotations(mask, LESION)
    assert len(anns) == 2
    assert {ann["category_id"] for ann in anns} == {1}
    by_area = {ann["area"]: ann for ann in anns}
    assert set(by_area) == {int(a.sum()), int(b.sum())}
    _check_ann_matches(by_area[int(a.sum())], a)
    _check_ann_matches(by_area[int(b.sum())], b)
    assert by_area[450]["bbox"] == [10.0, 5.0, 30.0, 15.0]


def test_eight_connectivity_corner_touching_squares_are_one_instance():
    # Two 8x8 squares (64 px each) touching only at a corner: with 8-connectivity they are one
    # 128 px instance (kept); with 4-connectivity they would be two 64 px ones (both dropped).
    mask = np.zeros((40, 40), np.uint8)
    mask[4:12, 4:12] = 1
    mask[12:20, 12:20] = 1
    anns = mask_to_annotations(mask, LESION)
    assert len(anns) == 1
    _check_ann_matches(anns[0], mask.astype(bool))
    assert anns[0]["area"] == 128
    assert anns[0]["bbox"] == [4.0, 4.0, 16.0, 16.0]


def test_merged_vs_separate_labels_cncb():
    mask = np.zeros((64, 64), np.uint8)
    mask[2:62, 2:62] = 1  # lung field
    mask[10:22, 10:22] = 2  # GGO, 144 px
    mask[10:22, 22:34] = 3  # consolidation, 144 px, touching the GGO
    merged = mask_to_annotations(mask, CNCB_MERGED)
    assert len(merged) == 1
    assert merged[0]["category_id"] == 1
    _check_ann_matches(merged[0], np.isin(mask, (2, 3)))
    assert merged[0]["area"] == 288

    separate = mask_to_annotations(mask, CNCB_SEPARATE)
    assert len(separate) == 2
    by_cat = {ann["category_id"]: ann for ann in separate}
    assert set(by_cat) == {1, 2}
    _check_ann_matches(by_cat[1], mask == 2)  # GGO
    _check_ann_matches(by_cat[2], mask == 3)  # consolidation
    assert list(CNCB_SEPARATE) == ["GGO", "Consolidation"]


def test_lung_label_never_becomes_an_instance():
    mask = np.zeros((64, 64), np.uint8)
    mask[2:62, 2:62] = 1  # a huge lung component, no lesion
    assert mask_to_annotations(mask, CNCB_MERGED) == []
    assert mask_to_annotations(mask, CNCB_SEPARATE) == []
    mask[30:45, 30:45] = 3
    anns = mask_to_annotations(mask, CNCB_MERGED)
    assert len(anns) == 1
    _check_ann_matches(anns[0], mask == 3)


def test_empty_mask_gives_no_annotations():
    assert mask_to_annotations(np.zeros((32, 32), np.uint8), CNCB_MERGED) == []


def test_annotations_are_json_serialisable():
    mask = np.zeros((40, 40), np.uint8)
    mask[5:25, 5:25] = 2
    anns = mask_to_annotations(mask, TWO_LABEL_SEPARATE)
    back = json.loads(json.dumps(anns))
    assert np.array_equal(mask_util.decode(back[0]["segmentation"]).astype(bool), mask == 2)
    assert back[0]["category_id"] == 2


# ----------------------------------------------------------------------------- split_by_group


def test_split_by_group_deterministic_disjoint_nonempty():
    groups = [f"p{i % 7}" for i in range(30)]
    val = split_by_group(groups, val_fraction=0.2, seed=3)
    assert val == split_by_group(list(reversed(groups)), val_fraction=0.2, seed=3)
    assert val == split_by_group(groups, val_fraction=0.2, seed=3)
    assert val <= set(groups)
    assert len(val) == 2  # ceil(7 * 0.2)
    train = set(groups) - val
    assert train and not (train & val)
    # Every item goes to exactly one side, by its group.
    assert all((g in val) != (g in train) for g in groups)
    # Different seeds do change the choice for some seed.
    assert any(split_by_group(groups, 0.2, seed=s) != val for s in range(10))


def test_split_by_group_at_least_one_val_and_one_train():
    assert len(split_by_group(["a", "b"], val_fraction=0.01)) == 1
    val = split_by_group(["a", "b", "c"], val_fraction=0.99)
    assert len(val) == 2  # one group always stays in train
    assert split_by_group(["a", "a", "a"]) == set()  # a single group cannot be split


# ----------------------------------------------------------------------------- CNCB layout


def test_convert_cncb_layout_split_by_scan(tmp_path):
    src = _make_cncb(str(tmp_path / "cncb"))
    out = str(tmp_path / "out")
    outputs = convert_layout("cncb", src, out)
    assert set(outputs) == {"train", "val"}
    for split in ("train", "val"):
        assert outputs[split] == os.path.join(out, "annotations", f"{split}.json")
        assert os.path.isfile(outputs[split])
    train, val = _load(outputs["train"]), _load(outputs["val"])

    assert [c["name"] for c in train["categories"]] == ["Lesion"]
    assert train["categories"] == val["categories"]

    train_groups = {im["group"] for im in train["images"]}
    val_groups = {im["group"] for im in val["images"]}
    assert val_groups and train_groups
    assert not (train_groups & val_groups)
    assert train_groups | val_groups == {f"scan{s:02d}" for s in range(5)}
    assert len(val_groups) == 1  # ceil(5 * 0.2)

    names = [im["file_name"] for im in train["images"] + val["images"]]
    expected = {f"image/scan{s:02d}/{f}.jpg" for s in range(5) for f in range(2)}
    assert sorted(names) == sorted(expected)  # every slice exactly once
    ids = [im["id"] for im in train["images"] + val["images"]]
    assert len(set(ids)) == len(ids)
    for im in train["images"] + val["images"]:
        assert im["file_name"].split("/")[1] == im["group"]
        assert os.path.isfile(os.path.join(train["info"]["image_root"], im["file_name"]))
        assert (im["height"], im["width"]) == (64, 64)

    for coco in (train, val):
        by_image = {im["id"]: [] for im in coco["images"]}
        for ann in coco["annotations"]:
            by_image[ann["image_id"]].append(ann)
        for im in coco["images"]:
            anns = by_image[im["id"]]
            if im["file_name"].endswith("/0.jpg"):
                assert len(anns) == 1 and anns[0]["category_id"] == 1
                assert anns[0]["area"] == 288
                assert anns[0]["bbox"] == [10.0, 10.0, 24.0, 12.0]
            else:
                assert anns == []  # slices without lesions are kept, with no annotation
    assert len(train["images"]) == 8 and len(val["images"]) == 2
    ann_ids = [a["id"] for a in train["annotations"] + val["annotations"]]
    assert len(set(ann_ids)) == len(ann_ids) == 5


def test_convert_cncb_separate_two_categories(tmp_path):
    src = _make_cncb(str(tmp_path / "cncb"))
    outputs = convert_layout("cncb", src, str(tmp_path / "out"), separate=True)
    train, val = _load(outputs["train"]), _load(outputs["val"])
    assert train["categories"] == [{"id": 1, "name": "GGO"}, {"id": 2, "name": "Consolidation"}]
    anns = train["annotations"] + val["annotations"]
    assert len(anns) == 10  # one GGO + one consolidation on each of the 5 lesion slices
    assert sorted(a["category_id"] for a in anns) == [1] * 5 + [2] * 5
    assert all(a["area"] == 144 for a in anns)


def test_binary_layout_cannot_be_separated(tmp_path):
    src = _make_binary_folder(str(tmp_path / "bin"), num=2)
    with pytest.raises(ValueError, match="separate"):
        convert_layout("binary-folder", src, str(tmp_path / "out"), separate=True)
    with pytest.raises(ValueError, match="unknown layout"):
        convert_layout("nope", src, str(tmp_path / "out"))


# ----------------------------------------------------------------------------- bad input


def _assert_format_error(excinfo, path, *words):
    err = excinfo.value
    msg = str(err)
    assert str(path) in msg, msg
    for word in words:
        assert word in msg, msg
    assert err.path == str(path)


def test_unreadable_image_names_the_file(tmp_path):
    src = _make_binary_folder(str(tmp_path / "bin"), num=3)
    bad = os.path.join(src, "images", "slice_001.png")
    with open(bad, "wb") as f:
        f.write(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes())
    out = tmp_path / "out"
    with pytest.raises(DatasetFormatError) as excinfo:
        convert_layout("binary-folder", src, str(out))
    _assert_format_error(excinfo, bad, "cannot read image")
    assert not (out / "annotations" / "train.json").exists()  # nothing half-written


def test_unreadable_mask_names_the_file(tmp_path):
    src = _make_binary_folder(str(tmp_path / "bin"), num=3)
    bad = os.path.join(src, "masks", "slice_002.png")
    with open(bad, "wb") as f:
        f.write(b"not a png at all")
    with pytest.raises(DatasetFormatError) as excinfo:
        convert_layout("binary-folder", src, str(tmp_path / "out"))
    _assert_format_error(excinfo, bad, "cannot read mask")


def test_size_mismatch_names_mask_and_image(tmp_path):
    src = _make_cncb(str(tmp_path / "cncb"), num_scans=2, frames=1)
    mask_path = os.path.join(src, "mask", "scan01", "0.png")
    image_path = os.path.join(src, "image", "scan01", "0.jpg")
    _save_png(np.zeros((64, 48), np.uint8), mask_path)
    with pytest.raises(DatasetFormatError) as excinfo:
        convert_layout("cncb", src, str(tmp_path / "out"))
    _assert_format_error(excinfo, mask_path, image_path, "differs", "(48, 64)", "(64, 64)")


def test_unexpected_mask_value_names_the_file(tmp_path):
    src = _make_binary_folder(str(tmp_path / "bin"), num=3)
    bad = os.path.join(src, "masks", "slice_001.png")
    mask = np.zeros((64, 64), np.uint8)
    mask[3, 3] = 7
    _save_png(mask, bad)
    with pytest.raises(DatasetFormatError) as excinfo:
        convert_layout("binary-folder", src, str(tmp_path / "out"))
    _assert_format_error(excinfo, bad, "unexpected mask values [7]")


def test_cncb_value_3_is_unexpected_in_a_binary_mask(tmp_path):
    src = _make_binary_folder(str(tmp_path / "bin"), num=2)
    bad = os.path.join(src, "masks", "slice_000.png")
    mask = np.zeros((64, 64), np.uint8)
    mask[10:30, 10:30] = 3
    _save_png(mask, bad)
    with pytest.raises(DatasetFormatError) as excinfo:
        convert_layout("binary-folder", src, str(tmp_path / "out"))
    _assert_format_error(excinfo, bad, "[3]")


def test_colour_mask_is_rejected(tmp_path):
    src = _make_binary_folder(str(tmp_path / "bin"), num=2)
    bad = os.path.join(src, "masks", "slice_000.png")
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[5:20, 5:20, 0] = 1  # red only
    Image.fromarray(rgb, mode="RGB").save(bad)
    with pytest.raises(DatasetFormatError) as excinfo:
        convert_layout("binary-folder", src, str(tmp_path / "out"))
    _assert_format_error(excinfo, bad, "colour")


def test_grey_mask_stored_as_rgb_is_accepted(tmp_path):
    src = _make_binary_folder(str(tmp_path / "bin"), num=2)
    mask_path = os.path.join(src, "masks", "slice_000.png")
    grey = np.array(Image.open(mask_path))
    Image.fromarray(np.stack([grey] * 3, axis=-1), mode="RGB").save(mask_path)
    outputs = convert_layout("binary-folder", src, str(tmp_path / "out"), val_fraction=0.5)
    anns = _load(outputs["train"])["annotations"] + _load(outputs["val"])["annotations"]
    assert len(anns) == 1 and anns[0]["area"] == 225


@pytest.mark.parametrize("layout", ["cncb", "binary-folder"])
def test_image_without_mask(tmp_path, layout):
    if layout == "cncb":
        src = _make_cncb(str(tmp_path / "src"), num_scans=2, frames=2)
        orphan = os.path.join(src, "image", "scan01", "7.jpg")
        _save_jpg(_ct_like(7), orphan)
    else:
        src = _make_binary_folder(str(tmp_path / "src"), num=3)
        orphan = os.path.join(src, "images", "extra.png")
        _save_png(_ct_like(7), orphan)
    with pytest.raises(DatasetFormatError) as excinfo:
        convert_layout(layout, src, str(tmp_path / "out"))
    _assert_format_error(excinfo, orphan, "image has no mask", "missing pair")


@pytest.mark.parametrize("layout", ["cncb", "binary-folder"])
def test_mask_without_image(tmp_path, layout):
    if layout == "cncb":
        src = _make_cncb(str(tmp_path / "src"), num_scans=2, frames=2)
        orphan = os.path.join(src, "mask", "scan05", "0.png")
    else:
        src = _make_binary_folder(str(tmp_path / "src"), num=3)
        orphan = os.path.join(src, "masks", "extra.png")
    _save_png(np.zeros((64, 64), np.uint8), orphan)
    with pytest.raises(DatasetFormatError) as excinfo:
        convert_layout(layout, src, str(tmp_path / "out"))
    _assert_format_error(excinfo, orphan, "mask has no image", "missing pair")


def test_missing_layout_folder_and_empty_layout(tmp_path):
    with pytest.raises(DatasetFormatError) as excinfo:
        convert_layout("cncb", str(tmp_path / "nothing"), str(tmp_path / "out"))
    _assert_format_error(excinfo, str(tmp_path / "nothing" / "image"), "folder not found")
    (tmp_path / "empty" / "images").mkdir(parents=True)
    (tmp_path / "empty" / "masks").mkdir(parents=True)
    with pytest.raises(DatasetFormatError) as excinfo:
        convert_layout("binary-folder", str(tmp_path / "empty"), str(tmp_path / "out"))
    _assert_format_error(excinfo, str(tmp_path / "empty"), "no image/mask pairs")


def test_loader_of_missing_json_names_file_and_command(tmp_path):
    name = f"test_ct_lesion_missing_{uuid.uuid4().hex}"
    json_file = str(tmp_path / "nowhere" / "annotations" / "train.json")
    register_ct_lesion_coco(name, json_file, ["Lesion"], hint="cncb <ct_lesion_seg folder>")
    try:
        with pytest.raises(DatasetFormatError) as excinfo:
            DatasetCatalog.get(name)
        msg = str(excinfo.value)
        assert json_file in msg
        assert "not found" in msg
        assert "tools/convert_dataset.py cncb <ct_lesion_seg folder>" in msg
        assert f"--output {tmp_path / 'nowhere'}" in msg
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


# ----------------------------------------------------------------------------- no overwrite


def test_no_overwrite_without_flag(tmp_path):
    src = _make_binary_folder(str(tmp_path / "bin"), num=4)
    out = str(tmp_path / "out")
    first = convert_layout("binary-folder", src, out)
    before = {s: _load(p) for s, p in first.items()}
    with pytest.raises(FileExistsError) as excinfo:
        convert_layout("binary-folder", src, out)
    assert os.path.join(out, "annotations", "train.json") in str(excinfo.value)
    assert "overwrite" in str(excinfo.value)
    assert {s: _load(p) for s, p in first.items()} == before  # untouched
    # A different split asked with overwrite=True replaces the files.
    again = convert_layout("binary-folder", src, out, overwrite=True, val_fraction=0.5)
    assert again == first
    assert len(_load(again["val"])["images"]) == 2


def test_convert_dataset_tool_subprocess(tmp_path):
    src = _make_binary_folder(str(tmp_path / "bin"), num=4)
    out = str(tmp_path / "out")
    env = dict(os.environ, PYTHONPATH=REPO)
    cmd = [
        sys.executable,
        os.path.join(REPO, "tools", "convert_dataset.py"),
        "binary-folder",
        src,
        "--output",
        out,
    ]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    train_json = os.path.join(out, "annotations", "train.json")
    val_json = os.path.join(out, "annotations", "val.json")
    assert f"train: {train_json}" in first.stdout
    assert f"val: {val_json}" in first.stdout
    assert os.path.isfile(train_json) and os.path.isfile(val_json)

    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert second.returncode != 0
    assert "Traceback" not in second.stderr
    errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, second.stderr
    assert train_json in errors[0] and "--overwrite" in errors[0]

    third = subprocess.run(
        cmd + ["--overwrite"], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert third.returncode == 0, third.stderr


# ----------------------------------------------------------------------------- real samples


def test_real_medseg100(shared_data, tmp_path):
    src = os.path.join(shared_data, "medseg100")
    outputs = convert_layout("binary-folder", src, str(tmp_path / "medseg100"))
    train, val = _load(outputs["train"]), _load(outputs["val"])
    assert len(train["images"]) == 64 and len(val["images"]) == 16
    train_names = {im["file_name"] for im in train["images"]}
    val_names = {im["file_name"] for im in val["images"]}
    assert len(train_names) == 64 and len(val_names) == 16
    assert not (train_names & val_names)
    assert train_names | val_names == {
        f"images/{n}" for n in os.listdir(os.path.join(src, "images"))
    }
    assert train["info"]["image_root"] == os.path.abspath(src)
    anns = train["annotations"] + val["annotations"]
    assert len(train["annotations"]) > 0 and len(val["annotations"]) > 0
    assert all(a["area"] > 100 for a in anns)
    assert {a["category_id"] for a in anns} == {1}

    # Each slice: instances are disjoint, inside the lesion mask, sum to their areas, and
    # every lesion pixel not covered belongs to a component of 100 px or fewer.
    by_image = {}
    for a in anns:
        by_image.setdefault(a["image_id"], []).append(a)
    for im in train["images"][:8] + val["images"][:4]:
        lesion = (
            np.array(Image.open(os.path.join(src, "masks", os.path.basename(im["file_name"])))) == 1
        )
        assert lesion.shape == (im["height"], im["width"])
        covered = np.zeros(lesion.shape, np.int32)
        for a in by_image.get(im["id"], []):
            m = _decode(a)
            assert int(m.sum()) == a["area"]
            assert a["bbox"] == _expected_bbox(m)
            covered += m
        assert covered.max() <= 1
        assert not (covered.astype(bool) & ~lesion).any()
        rest, n = ndimage.label(lesion & ~covered.astype(bool), np.ones((3, 3), bool))
        assert n == 0 or np.bincount(rest.ravel())[1:].max() <= 100

    # Register the converted JSON and load it through DatasetCatalog.
    name = f"test_ct_lesion_medseg100_{uuid.uuid4().hex}"
    register_ct_lesion_coco(name, outputs["val"], ["Lesion"])
    try:
        records = DatasetCatalog.get(name)
        assert len(records) == 16
        assert MetadataCatalog.get(name).thing_classes == ["Lesion"]
        assert sum(len(r["annotations"]) for r in records) == len(val["annotations"])
        for r in records:
            assert os.path.isfile(r["file_name"])
            assert os.path.dirname(r["file_name"]) == os.path.join(os.path.abspath(src), "images")
            for a in r["annotations"]:
                assert "bbox_mode" in a
                assert isinstance(a["segmentation"], dict) and "counts" in a["segmentation"]
                assert a["category_id"] == 0  # contiguous id of "Lesion"
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_real_medseg_multiclass_transposed(shared_data, tmp_path):
    src = os.path.join(shared_data, "medseg_multiclass")
    out = str(tmp_path / "mm_sep")
    outputs = convert_layout("medseg-multiclass", src, out, separate=True)
    train, val = _load(outputs["train"]), _load(outputs["val"])
    images = train["images"] + val["images"]
    assert len(images) == 78
    assert not (
        {im["file_name"] for im in train["images"]} & {im["file_name"] for im in val["images"]}
    )
    image_root = train["info"]["image_root"]
    assert image_root == os.path.abspath(os.path.join(out, "images"))
    for im in images:
        copy = os.path.join(image_root, im["file_name"])
        stem = os.path.splitext(os.path.basename(im["file_name"]))[0]
        source = os.path.join(src, "images", stem + ".jpg")
        assert copy.endswith(".png") and os.path.isfile(copy)
        with Image.open(source) as s, Image.open(copy) as c:
            assert c.size == s.size[::-1]  # the transpose of the source JPG
            assert (im["width"], im["height"]) == c.size
            if stem in ("medseg_000", "medseg_010"):
                assert np.array_equal(np.asarray(c), np.asarray(s.convert("L")).T)
    # Masks are transposed with the images: an annotation of slice 000 is the .T of its mask.
    first = next(im for im in images if im["file_name"] == "medseg_000.png")
    mask_t = np.array(Image.open(os.path.join(src, "masks", "medseg_000.png"))).T
    anns = [a for a in train["annotations"] + val["annotations"] if a["image_id"] == first["id"]]
    assert anns
    for a in anns:
        m = _decode(a)
        assert m.shape == mask_t.shape
        assert (mask_t[m] == a["category_id"]).all()

    cats = {c["id"]: c["name"] for c in train["categories"]}
    assert cats == {1: "GGO", 2: "Consolidation"}
    all_anns = train["annotations"] + val["annotations"]
    assert {a["category_id"] for a in all_anns} == {1, 2}  # both GGO and consolidation
    assert all(a["area"] > 100 for a in all_anns)

    name = f"test_ct_lesion_mm_sep_{uuid.uuid4().hex}"
    register_ct_lesion_coco(name, outputs["train"], ["GGO", "Consolidation"])
    try:
        records = DatasetCatalog.get(name)
        assert len(records) == len(train["images"])
        for r in records:
            assert os.path.isfile(r["file_name"])
            with Image.open(r["file_name"]) as img:
                assert img.size == (r["width"], r["height"])
            for a in r["annotations"]:
                assert "bbox_mode" in a and isinstance(a["segmentation"], dict)
                assert a["category_id"] in (0, 1)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)

    # Merged variant, in a separate output, and no silent overwrite of the transposed copies.
    merged = convert_layout("medseg-multiclass", src, str(tmp_path / "mm"))
    merged_anns = _load(merged["train"])["annotations"] + _load(merged["val"])["annotations"]
    assert {a["category_id"] for a in merged_anns} == {1}
    with pytest.raises(FileExistsError):
        convert_layout("medseg-multiclass", src, str(tmp_path / "mm"))


# ----------------------------------------------------------------------------- 0/255 masks


@pytest.mark.parametrize("foreground", [1, 255])
def test_binary_folder_accepts_0_1_and_0_255_masks(tmp_path, foreground):
    src = _make_binary_folder(str(tmp_path / "bin"), num=3)
    for name in os.listdir(os.path.join(src, "masks")):
        path = os.path.join(src, "masks", name)
        mask = np.array(Image.open(path))
        _save_png((mask > 0).astype(np.uint8) * foreground, path)
    outputs = convert_layout("binary-folder", src, str(tmp_path / "out"))
    anns = _load(outputs["train"])["annotations"] + _load(outputs["val"])["annotations"]
    assert anns and all(a["area"] > 100 for a in anns)


def test_binary_mask_with_both_1_and_255_is_refused(tmp_path):
    src = _make_binary_folder(str(tmp_path / "bin"), num=2)
    bad = os.path.join(src, "masks", "slice_000.png")
    mask = np.zeros((64, 64), np.uint8)
    mask[10:30, 10:30] = 255
    mask[40:60, 40:60] = 1
    _save_png(mask, bad)
    with pytest.raises(DatasetFormatError) as excinfo:
        convert_layout("binary-folder", src, str(tmp_path / "out"))
    _assert_format_error(
        excinfo, bad, "unexpected mask values [255]; allowed 0 and 1, or 0 and 255"
    )


def test_real_covid19_ct_seg_split_by_volume(shared_data, tmp_path):
    src = os.path.join(shared_data, "covid19_ct_seg")
    outputs = convert_layout("covid19-ct-seg", src, str(tmp_path / "c19"), min_area=25)
    train, val = _load(outputs["train"]), _load(outputs["val"])
    with open(os.path.join(src, "volumes.csv")) as f:
        volume_of = dict(line.strip().split(",") for line in f.readlines()[1:])
    assert len(train["images"]) + len(val["images"]) == len(volume_of) == 1259
    # every slice carries its volume from volumes.csv, and no volume is in both splits
    for split in (train, val):
        for im in split["images"]:
            assert im["group"] == volume_of[os.path.basename(im["file_name"])]
    train_vols = {im["group"] for im in train["images"]}
    val_vols = {im["group"] for im in val["images"]}
    assert train_vols and val_vols and not (train_vols & val_vols)
    assert len(train_vols | val_vols) == 14
    # 0/255 masks become instances whose union is the mask's foreground (components > 25 px)
    by_image = {}
    for a in val["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    checked = 0
    for im in val["images"][:40]:
        lesion = np.array(Image.open(os.path.join(src, "masks", os.path.basename(im["file_name"]))))
        assert set(np.unique(lesion)) <= {0, 255}
        covered = np.zeros(lesion.shape, bool)
        for a in by_image.get(im["id"], []):
            covered |= _decode(a)
        assert not (covered & (lesion == 0)).any()
        rest, n = ndimage.label((lesion > 0) & ~covered, np.ones((3, 3), bool))
        assert n == 0 or np.bincount(rest.ravel())[1:].max() <= 25
        checked += bool(covered.any())
        # lung masks are recorded beside each slice
        assert im["lung_file"] == "lungs/" + os.path.basename(im["file_name"])
    assert checked > 10
    # slices are annotated as stored: the image the JSON names is the source file, unturned
    first = train["images"][0]
    assert os.path.join(train["info"]["image_root"], first["file_name"]) == os.path.join(
        os.path.abspath(src), first["file_name"]
    )


def test_volume_layout_needs_a_row_per_slice(tmp_path):
    src = _make_binary_folder(str(tmp_path / "vol"), num=4)
    names = sorted(os.listdir(os.path.join(src, "images")))
    with open(os.path.join(src, "volumes.csv"), "w") as f:
        f.write("file,volume\n" + "".join(f"{n},v{i % 2}\n" for i, n in enumerate(names[:-1])))
    with pytest.raises(DatasetFormatError) as excinfo:
        convert_layout("covid19-ct-seg", src, str(tmp_path / "out"))
    _assert_format_error(excinfo, os.path.join(src, "images", names[-1]), "no row in")
    os.remove(os.path.join(src, "volumes.csv"))
    with pytest.raises(DatasetFormatError, match="volume table not found"):
        convert_layout("covid19-ct-seg", src, str(tmp_path / "out"))
