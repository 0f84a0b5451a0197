"""The trained weights that ship with the project: the file's hash, loading by name, the
default model of the predictor, and the zoo model finding lesions on real slices."""

import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from ct_lesion_d2.data.readers import read_grey_image
from ct_lesion_d2.engine.predictor import CTLesionPredictor, build_predict_config
from ct_lesion_d2.model_zoo import (
    DEFAULT_ZOO_MODEL,
    ZOO_DIR,
    ZOO_MODELS,
    ZOO_RECORD_KEY,
    ZooModelError,
    file_sha256,
    get_zoo_config,
    zoo_record,
    zoo_weights,
)


def test_every_zoo_file_has_its_published_hash_and_is_compact():
    assert DEFAULT_ZOO_MODEL in ZOO_MODELS
    for name, entry in ZOO_MODELS.items():
        path = os.path.join(ZOO_DIR, entry["file"])
        assert file_sha256(path) == entry["sha256"], name
        assert os.path.getsize(path) < 15e6
        assert zoo_weights(name) == path


@pytest.mark.parametrize("name", list(ZOO_MODELS))
def test_zoo_file_carries_float16_weights_and_how_it_was_made(name):
    path = zoo_weights(name)
    state = torch.load(path, map_location="cpu", weights_only=True)
    floats = [v for v in state["model"].values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float16 for v in floats)
    record = zoo_record(path)
    assert record is state[ZOO_RECORD_KEY] or record == state[ZOO_RECORD_KEY]
    assert record["training_data"] == [
        "ct_lesion_medseg100_train",
        "ct_lesion_covid19_ct_seg_train",
    ]
    assert record["iteration"] > 0 and "MODEL" in record["config"]


def test_a_damaged_or_unknown_zoo_file_is_refused(tmp_path, monkeypatch):
    with pytest.raises(ZooModelError, match="unknown zoo model 'nope'"):
        zoo_weights("nope")
    entry = ZOO_MODELS[DEFAULT_ZOO_MODEL]
    copy = tmp_path / entry["file"]
    shutil.copy(os.path.join(ZOO_DIR, entry["file"]), copy)
    with open(copy, "r+b") as f:
        f.seek(1000)
        f.write(b"\x00\x01\x02")
    monkeypatch.setattr("ct_lesion_d2.model_zoo.ZOO_DIR", str(tmp_path))
    with pytest.raises(ZooModelError, match="is not the published"):
        zoo_weights(DEFAULT_ZOO_MODEL)
    os.remove(copy)
    with pytest.raises(ZooModelError, match="not found"):
        zoo_weights(DEFAULT_ZOO_MODEL)


def test_zoo_config_and_default_predictor_config():
    cfg = get_zoo_config(DEFAULT_ZOO_MODEL)
    assert cfg.MODEL.WEIGHTS == zoo_weights(DEFAULT_ZOO_MODEL)
    default = build_predict_config(None)
    assert default.MODEL.WEIGHTS == cfg.MODEL.WEIGHTS
    assert default.MODEL.RESNETS.NORM == "GN"
    with pytest.raises(ValueError, match="not both"):
        build_predict_config("mask_rcnn_R18_T1_FPN1_lesion.yaml", zoo_model=DEFAULT_ZOO_MODEL)


@pytest.mark.parametrize("name", list(ZOO_MODELS))
def test_zoo_model_finds_the_lesions_of_real_slices(shared_data, name):
    predictor = CTLesionPredictor.from_zoo(name, device="cpu", confidence_threshold=0.5)
    # a validation slice of each source (never trained on): the union of the predicted masks
    # covers the radiologists' lesion mask
    cases = [("medseg100", "medseg_010.png"), ("covid19_ct_seg", "0050.png")]
    for source, name in cases:
        image = os.path.join(shared_data, source, "images", name)
        truth = np.array(Image.open(os.path.join(shared_data, source, "masks", name))) > 0
        assert truth.sum() > 500
        (result,) = predictor([read_grey_image(image)], is_hu=False)
        union = result.instances.pred_masks.any(dim=0).numpy()
        assert len(result.instances) > 0
        dice = 2 * (union & truth).sum() / (union.sum() + truth.sum())
        assert dice > 0.4, (source, name, dice)
