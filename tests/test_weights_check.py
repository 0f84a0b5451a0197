"""Weights that do not fit the model stop with one line; the expected differences are named."""

import os

import pytest
import torch
from detectron2.modeling import build_model

from ct_lesion_d2.analysis import predict
from ct_lesion_d2.engine.weights_check import WeightsError, load_checked_weights
from ct_lesion_d2.export import checked_export as export
from ct_lesion_d2.model_zoo import get_config

CPU = ["MODEL.DEVICE", "cpu"]
R50 = os.path.join(os.path.dirname(__file__), "..", "configs", "mask_rcnn_R50_FPN_lesion.yaml")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def r18_t1(tmp_path_factory):
    """A random-weight R18_T1 segmenter saved as a checkpoint."""
    path = str(tmp_path_factory.mktemp("weights") / "model_final.pth")
    torch.manual_seed(0)
    torch.save({"model": build_model(get_config("mask_rcnn_R18_T1", CPU)).state_dict()}, path)
    return path


def test_r50_config_with_r18_weights_stops_with_one_line(r18_t1, tmp_path, shared_data):
    image = os.path.join(shared_data, "medseg100", "images", "medseg_003.png")
    out = tmp_path / "out"
    argv = ["--config-file", R50, "--weights", r18_t1, "--input", image, "--output", str(out)]
    with pytest.raises(SystemExit) as e:
        predict.main(argv + ["--device", "cpu", "--no-progress"])
    assert e.value.code == (
        f"error: {r18_t1} does not fit the GeneralizedRCNN of {R50}: 230 model keys missing "
        "(backbone.fpn_lateral2.weight, backbone.fpn_lateral2.bias, backbone.fpn_output2.weight, "
        "...); 22 keys of another shape (backbone.fpn_lateral4.weight, "
        "backbone.bottom_up.res2.0.conv1.weight, backbone.bottom_up.res2.1.conv1.weight, ...). "
        "Give the config these weights were trained with"
    )
    assert not out.exists()


def test_export_checks_weights_too(r18_t1):
    cfg = get_config(R50, CPU + ["MODEL.WEIGHTS", r18_t1])
    with pytest.raises(SystemExit, match=r"^error: .* does not fit the GeneralizedRCNN of x.yaml"):
        export.load_model(cfg, "x.yaml")


def test_matching_weights_load_and_classifier_differences_are_named(r18_t1):
    assert load_checked_weights(build_model(get_config("mask_rcnn_R18_T1", CPU)), r18_t1) == {}
    classifier = build_model(get_config("classifier_R18_T1", CPU))
    # segmentation weights as a trained classifier: module S would stay random
    with pytest.raises(WeightsError, match=r"CTMaskNetClassifier of c.yaml: \d+ model keys "
                       r"missing \(classifier\."):  # fmt: skip
        load_checked_weights(classifier, r18_t1, "c.yaml")
    found = load_checked_weights(classifier, r18_t1, "c.yaml", purpose="init")
    assert set(found) == {
        "the mask head, which the classifier does not use",
        "module S (the classifier), trained after the detector",
    }


def test_missing_and_truncated_weights(r18_t1, tmp_path):
    model = build_model(get_config("mask_rcnn_R18_T1", CPU))
    missing = str(tmp_path / "none.pth")
    with pytest.raises(WeightsError) as e:
        load_checked_weights(model, missing)
    assert str(e.value) == f"{missing}: weights file not found (MODEL.WEIGHTS or --weights)"
    truncated = tmp_path / "cut.pth"
    truncated.write_bytes(open(r18_t1, "rb").read()[:5000])
    with pytest.raises(WeightsError) as e:
        load_checked_weights(model, str(truncated))
    assert str(e.value).startswith(
        f"{truncated}: not a readable checkpoint (truncated, or not a PyTorch/Detectron2 "
        "weights file: "
    )
