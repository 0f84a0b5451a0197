"""Tests of the synthetic CT-slice generator (ct_lesion_d2.data.synthetic).

Lesion components are checked with 4-connectivity, the stricter choice: every 8-connected
component is a union of 4-connected ones, so "all 4-connected components > 100 px" implies
the same for 8-connectivity, and the lesion count is also checked with 8-connectivity.
"""

import json
import os

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage as ndi

from ct_lesion_d2.data.synthetic import (
    CLASS_NAMES,
    MIN_COMPONENT_PX,
    _render_slice,
    generate_synthetic_slices,
)

NUM = 9
FOUR = ndi.generate_binary_structure(2, 1)
EIGHT = ndi.generate_binary_structure(2, 2)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """Nine slices (three of each class) generated once for the module."""
    out = tmp_path_factory.mktemp("synth")
    records = generate_synthetic_slices(out, NUM, seed=0, progress=False)
    return out, records


def _load(out, rel):
    """Read a PNG as a numpy array."""
    return np.array(Image.open(os.path.join(out, rel)))


def _all_bytes(out):
    """Map each written file (relative path) to its bytes."""
    files = {}
    for root, _, names in os.walk(out):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as handle:
                files[os.path.relpath(path, out)] = handle.read()
    return files


def test_records_and_files(generated):
    out, records = generated
    with open(os.path.join(out, "slices.json")) as handle:
        assert json.load(handle) == records
    assert len(records) == NUM
    keys = {"file_name", "mask_file", "class_id", "class_name", "num_lesions"}
    for i, rec in enumerate(records):
        assert set(rec) == keys
        assert rec["file_name"] == f"images/synth_{i:04d}.png"
        assert rec["mask_file"] == f"masks/synth_{i:04d}.png"
        assert rec["class_id"] == i % 3 and rec["class_name"] == CLASS_NAMES[i % 3]
        image = Image.open(os.path.join(out, rec["file_name"]))
        assert image.mode == "L" and image.size == (256, 256)
        assert _load(out, rec["mask_file"]).dtype == np.uint8
    assert {r["class_id"] for r in records} == {0, 1, 2}
    leftovers = [name for name in _all_bytes(out) if name.endswith(".tmp")]
    assert not leftovers


def test_deterministic_and_seed_dependent(generated, tmp_path):
    out, _ = generated
    generate_synthetic_slices(tmp_path / "same", NUM, seed=0, progress=False)
    assert _all_bytes(tmp_path / "same") == _all_bytes(out)
    generate_synthetic_slices(tmp_path / "other", 3, seed=1, progress=False)
    for i in range(3):
        rel = f"images/synth_{i:04d}.png"
        assert not np.array_equal(_load(tmp_path / "other", rel), _load(out, rel))


def test_mask_values_per_class(generated):
    out, records = generated
    for rec in records:
        values = set(np.unique(_load(out, rec["mask_file"])).tolist())
        if rec["class_id"] == 0:
            assert values == {0} and rec["num_lesions"] == 0
        elif rec["class_id"] == 1:  # consolidation only, 1-2 lesions
            assert values == {0, 2} and 1 <= rec["num_lesions"] <= 2
        else:  # ground glass, possibly with consolidated parts, 2-6 lesions
            assert 1 in values and values <= {0, 1, 2} and 2 <= rec["num_lesions"] <= 6


def test_lesion_components_are_large_and_separate(generated):
    out, records = generated
    for rec in records:
        mask = _load(out, rec["mask_file"])
        labels, n = ndi.label(mask > 0, structure=FOUR)
        assert n == rec["num_lesions"] == ndi.label(mask > 0, structure=EIGHT)[1]
        assert all(np.bincount(labels.ravel())[1:] > MIN_COMPONENT_PX)
        for value in (1, 2):
            labels, n = ndi.label(mask == value, structure=FOUR)
            assert all(np.bincount(labels.ravel(), minlength=n + 1)[1:] > MIN_COMPONENT_PX)


def test_covid_lesions_are_bilateral(generated):
    out, records = generated
    for rec in records:
        if rec["class_id"] == 2:
            cols = np.nonzero(_load(out, rec["mask_file"]))[1]
            assert cols.min() < 128 < cols.max()


def test_lesions_inside_lung_fields(generated):
    out, records = generated
    for rec in records:  # image check: lesions never touch the outer air
        image, mask = _load(out, rec["file_name"]), _load(out, rec["mask_file"])
        dark, _ = ndi.label(ndi.gaussian_filter(image.astype(float), 1.0) < 60)
        border = np.unique(np.concatenate([dark[0], dark[-1], dark[:, 0], dark[:, -1]]))
        outer_air = np.isin(dark, border[border > 0])
        assert not (outer_air & (mask > 0)).any()
    for i in range(6):  # exact check against the generator's own lung fields
        _, mask, lungs, _ = _render_slice(np.random.default_rng(100 + i), i % 3, 256)
        assert not ((mask > 0) & ~lungs).any()


def test_no_overwrite_without_flag(generated, tmp_path):
    out, _ = generated
    with pytest.raises(FileExistsError, match="overwrite=True"):
        generate_synthetic_slices(out, 2, progress=False)
    partial = tmp_path / "partial"
    os.makedirs(partial / "masks")
    (partial / "masks" / "synth_0001.png").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="synth_0001"):
        generate_synthetic_slices(partial, 2, progress=False)
    assert not (partial / "slices.json").exists()
    records = generate_synthetic_slices(partial, 2, overwrite=True, progress=True)
    assert len(records) == 2 and (partial / "slices.json").exists()
    assert _load(partial, "masks/synth_0001.png").shape == (256, 256)


def test_invalid_arguments(tmp_path):
    with pytest.raises(ValueError):
        generate_synthetic_slices(tmp_path, 1, size=64, progress=False)
    with pytest.raises(ValueError):
        generate_synthetic_slices(tmp_path, -1, progress=False)


def test_lesion_appearance(generated):
    out, records = generated
    for rec in records:
        image, mask = _load(out, rec["file_name"]).astype(float), _load(out, rec["mask_file"])
        assert image[:10].mean() < 30  # dark air above the body
        if (mask == 1).any():  # hazy: brighter than normal lung, darker than consolidation
            assert 80 < image[mask == 1].mean() < 160
        if (mask == 2).any():
            assert image[mask == 2].mean() > 150
