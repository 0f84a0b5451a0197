"""The trained weights that ship with the project: the file's hash, loading by name, the
default model of the predictor, and the zoo model finding lesions on real slices."""

import importlib.util
import os
import shutil

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model
from PIL import Image

from ct_lesion_d2.data.datasets.classification import load_ucsd_split
from ct_lesion_d2.data.readers import read_grey_image
from ct_lesion_d2.engine.predictor import CTLesionPredictor, build_predict_config
from ct_lesion_d2.evaluation.classification_evaluation import binary_auc
from ct_lesion_d2.model_zoo import (
    DEFAULT_ZOO_MODEL,
    ZOO_DIR,
    ZOO_MODELS,
    ZOO_RECORD_KEY,
    ZooModelError,
    file_sha256,
    get_zoo_config,
    zoo_models,
    zoo_record,
    zoo_weights,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# what each task's zoo files were trained on, and the most they may weigh (a classifier file
# holds its frozen detector, its image branch and S)
TRAINING_DATA = {
    "segmentation": ["ct_lesion_medseg100_train", "ct_lesion_covid19_ct_seg_train"],
    "classification": ["ct_ucsd_train"],
}
MAX_BYTES = {"segmentation": 15e6, "classification": 22e6}


def test_every_zoo_file_has_its_published_hash_and_is_compact():
    assert DEFAULT_ZOO_MODEL in zoo_models("segmentation")
    assert set(zoo_models("segmentation")) | set(zoo_models("classification")) == set(ZOO_MODELS)
    for name, entry in ZOO_MODELS.items():
        path = os.path.join(ZOO_DIR, entry["file"])
        assert file_sha256(path) == entry["sha256"], name
        assert os.path.getsize(path) < MAX_BYTES[entry["task"]]
        assert zoo_weights(name) == zoo_weights(name, entry["task"]) == path


@pytest.mark.parametrize("name", list(ZOO_MODELS))
def test_zoo_file_carries_float16_weights_and_how_it_was_made(name):
    path = zoo_weights(name)
    state = torch.load(path, map_location="cpu", weights_only=True)
    floats = [v for v in state["model"].values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float16 for v in floats)
    record = zoo_record(path)
    assert record is state[ZOO_RECORD_KEY] or record == state[ZOO_RECORD_KEY]
    assert record["training_data"] == TRAINING_DATA[ZOO_MODELS[name]["task"]]
    assert record["iteration"] > 0 and "MODEL" in record["config"]
    # the file fills every key of the model its config builds
    model = build_model(get_zoo_config(name, ["MODEL.DEVICE", "cpu"]))
    assert set(state["model"]) >= set(model.state_dict())


def test_a_zoo_model_of_the_other_task_is_refused():
    classifier, segmenter = zoo_models("classification")[0], DEFAULT_ZOO_MODEL
    with pytest.raises(ZooModelError, match=f"unknown segmentation zoo model '{classifier}'"):
        CTLesionPredictor.from_zoo(classifier)
    with pytest.raises(ZooModelError, match=f"unknown classification zoo model '{segmenter}'"):
        zoo_weights(segmenter, "classification")


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


@pytest.mark.parametrize("name", zoo_models("segmentation"))
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


@pytest.mark.parametrize("name", zoo_models("classification"))
def test_zoo_classifier_ranks_real_covid_slices_above_the_others(shared_data, name):
    """Through the predictor (what tools/predict.py runs), on UCSD validation slices it never
    trained on: the COVID scores put most COVID slices above most others."""
    predictor = CTLesionPredictor.from_zoo(classifier_model=name, device="cpu")
    records = load_ucsd_split(shared_data, "val")
    picked = [r for c in (0, 1) for r in [r for r in records if r["class_id"] == c][:8]]
    results = predictor([read_grey_image(r["file_name"]) for r in picked], is_hu=False)
    covid = [float(result.class_probs[1]) for result in results]
    assert all(0.0 <= p <= 1.0 for p in covid)
    auc = binary_auc(covid, [r["class_id"] == 1 for r in picked])
    assert auc > 0.7, auc


def test_make_zoo_file_keeps_its_facts_apart_from_config_overrides(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "make_zoo_file", os.path.join(REPO, "tools", "make_zoo_file.py")
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    checkpoint, output = tmp_path / "model_final.pth", tmp_path / "zoo.pth"
    torch.save({"model": {"w": torch.ones(2), "n": torch.tensor(3)}, "iteration": 7}, checkpoint)
    common = ["--config-file", "classifier_R18_T1", "--checkpoint", str(checkpoint)]
    with pytest.raises(SystemExit, match="--record takes KEY=VALUE facts, not 'SEED'"):
        tool.main(common + ["--output", str(output), "--record", "date=x", "SEED", "5"])
    assert not output.exists()
    tool.main(common + ["--output", str(output), "--record", "date=x", "--", "SEED", "5"])
    record = zoo_record(str(output))
    assert record["date"] == "x" and record["iteration"] == 7
    assert "SEED: 5" in record["config"].splitlines()
    assert torch.load(output, weights_only=True)["model"]["w"].dtype == torch.float16
