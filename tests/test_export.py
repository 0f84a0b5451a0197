"""TorchScript/ONNX export of the segmenter and classifier, and the CPU inference optimisations."""

import copy
import os

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model

import ct_lesion_d2  # noqa: F401
from ct_lesion_d2.export import (
    CLASSIFIER_TOLERANCES,
    SEGMENTATION_TOLERANCES,
    ExportedClassifier,
    ExportedSegmenter,
    ExportError,
    GatherROIAlign,
    check_exportable,
)
from ct_lesion_d2.export import checked_export as export_tool
from ct_lesion_d2.export import (
    classifier_candidates,
    compare_classification,
    compare_segmentation,
    export_classifier,
    export_segmenter,
    fold_batch_norm,
    optimize_for_inference,
    segmentation_adapter,
)
from ct_lesion_d2.model_zoo import get_config

pytestmark = pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
FORMATS = ("torchscript", "onnx")
# A small model: fewer proposals and detections keep tracing and the checks fast.
SMALL = [
    "MODEL.DEVICE",
    "cpu",
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
    "0.0",
    "MODEL.RPN.POST_NMS_TOPK_TEST",
    "100",
    "TEST.DETECTIONS_PER_IMAGE",
    "20",
]


def images():
    rng = np.random.default_rng(0)
    # the second size checks the dynamic height and width; the third has fewer anchors than
    # POST_NMS_TOPK_TEST, so fewer proposals than the traced image (a dynamic proposal count)
    sizes = [(200, 249), (160, 192), (16, 32)]
    return [torch.as_tensor(rng.integers(0, 255, (3, h, w)), dtype=torch.float32) for h, w in sizes]


@pytest.fixture(scope="module")
def segmenter():
    torch.manual_seed(0)
    return build_model(get_config("mask_rcnn_R18_T1", SMALL)).eval()


@pytest.fixture(scope="module")
def classifier():
    torch.manual_seed(0)
    opts = SMALL + ["MODEL.CT_CLASSIFIER.BATCH_DETECTIONS", "16"]
    return build_model(get_config("classifier_R18_T1", opts)).eval()


@pytest.mark.parametrize("fmt", FORMATS)
def test_segmenter_export_matches_eager(segmenter, fmt, tmp_path):
    path = str(tmp_path / f"segmenter.{fmt}")
    export_segmenter(segmenter, images()[0], fmt, path)
    exported = ExportedSegmenter(path)
    for image in images():
        _, names, outputs = segmentation_adapter(segmenter, image)
        reference = dict(zip(names, outputs))
        assert len(reference["scores"]) > 0  # score threshold 0: the comparison is not empty
        result = compare_segmentation(reference, exported.raw(image))
        assert result["ok"], result
        assert result["detections"][0] == result["detections"][1]
        assert result["pasted_mask_pixels_differing"] is not None
    # the eager calling convention: rescaled to height x width, masks pasted
    inputs = [{"image": images()[0], "height": 100, "width": 125}]
    with torch.no_grad():
        eager = segmenter(inputs)[0]["instances"]
    got = exported(inputs)[0]["instances"]
    assert got.image_size == (100, 125) and got.pred_masks.shape == eager.pred_masks.shape
    assert torch.allclose(got.pred_boxes.tensor, eager.pred_boxes.tensor, atol=0.05)


def test_compare_segmentation_detects_a_difference(segmenter):
    _, names, outputs = segmentation_adapter(segmenter, images()[0])
    reference = dict(zip(names, outputs))
    shifted = dict(reference, pred_boxes=reference["pred_boxes"] + 1.0)
    result = compare_segmentation(reference, shifted)
    assert not result["ok"]
    assert result["max_abs_diff"]["pred_boxes"] == pytest.approx(1.0)
    fewer = {k: v[:-1] if k != "image_size" else v for k, v in reference.items()}
    assert compare_segmentation(reference, fewer)["max_abs_diff"]["scores"] == float("inf")
    assert SEGMENTATION_TOLERANCES["pred_boxes"] < 1.0


@pytest.mark.parametrize("fmt", FORMATS)
def test_classifier_export_matches_eager(classifier, fmt, tmp_path):
    prefix = str(tmp_path / "classifier")
    export_classifier(classifier, images()[0], fmt, prefix)
    exported = ExportedClassifier(prefix, fmt)
    with torch.no_grad():
        counts = [len(classifier_candidates(classifier, [{"image": x}])[0]) for x in images()]
    assert len(set(counts)) > 1, counts  # the check covers a proposal count unlike the trace's
    for image in images():
        with torch.no_grad():
            reference = classifier([{"image": image}])[0]
        candidate = exported([{"image": image}])[0]
        result = compare_classification(reference, candidate)
        assert result["ok"], result
        assert candidate["roi_scores"].shape == (16,)
        assert set(candidate) == set(reference)
    assert CLASSIFIER_TOLERANCES["class_probs"] <= 1e-4
    with pytest.raises(ExportError, match="not a segmenter export"):
        ExportedSegmenter(prefix + ("_detector.ts" if fmt == "torchscript" else "_detector.onnx"))


@pytest.mark.parametrize("fmt", FORMATS)
def test_exports_take_float_images_whatever_the_example_dtype(segmenter, fmt, tmp_path):
    # Detectron2's mappers give uint8 images; an export traced on one must still take the
    # float images of other callers, and uint8 ones, as the eager model does
    path = str(tmp_path / f"segmenter.{fmt}")
    export_segmenter(segmenter, images()[0].to(torch.uint8), fmt, path)
    exported = ExportedSegmenter(path)
    for image in (images()[1], images()[1].to(torch.uint8)):
        _, names, outputs = segmentation_adapter(segmenter, image.float())
        result = compare_segmentation(dict(zip(names, outputs)), exported.raw(image))
        assert result["ok"], result


def test_unsupported_options_raise_clear_errors(segmenter, tmp_path):
    cfg = get_config("mask_rcnn_R18_T1", SMALL)
    check_exportable(cfg, "onnx")  # the project's configs export
    with pytest.raises(ExportError, match="opset >= 16"):
        check_exportable(cfg, "onnx", opset=13)
    with pytest.raises(ExportError, match="unknown export format 'tflite'"):
        check_exportable(cfg, "tflite")
    cfg.TEST.AUG.ENABLED = True
    with pytest.raises(ExportError, match="TEST.AUG.ENABLED"):
        check_exportable(cfg, "torchscript")
    with pytest.raises(ExportError, match="eval mode"):
        segmentation_adapter(copy.deepcopy(segmenter).train(), images()[0])
    path = str(tmp_path / "segmenter.ts")
    open(path, "w").close()
    with pytest.raises(FileExistsError, match="--overwrite"):
        export_segmenter(segmenter, images()[0], "torchscript", path)


def test_export_tool_refuses_an_old_opset(tmp_path):
    config = os.path.join(
        os.path.dirname(__file__), "..", "configs", "mask_rcnn_R18_T1_FPN1_lesion.yaml"
    )
    argv = [
        "--config-file",
        config,
        "--output",
        str(tmp_path / "out"),
        "--images",
        str(tmp_path),
        "--format",
        "onnx",
        "--opset",
        "13",
    ]
    with pytest.raises(
        SystemExit,
        match="mask_rcnn_R18_T1_FPN1_lesion.yaml: cannot export: "
        "MODEL.ROI_BOX_HEAD.POOLER_TYPE ROIAlignV2",
    ):
        export_tool.main(argv)
    assert not os.path.exists(tmp_path / "out")


def test_export_tool_keeps_config_overrides_after_images(tmp_path):
    # README form: --images DIR, then the overrides; argparse alone gives them to --images
    args = export_tool.parse_args(
        [
            "--config-file",
            "c.yaml",
            "--output",
            "o",
            "--images",
            str(tmp_path),
            "MODEL.WEIGHTS",
            "m.pth",
            "MODEL.DEVICE",
            "cpu",
        ]
    )
    assert args.images == [str(tmp_path)]
    assert args.opts == ["MODEL.WEIGHTS", "m.pth", "MODEL.DEVICE", "cpu"]


def test_optimized_model_matches_eager(segmenter):
    optimized = optimize_for_inference(copy.deepcopy(segmenter))
    assert not any(
        isinstance(getattr(m, "norm", None), torch.nn.BatchNorm2d) for m in optimized.modules()
    )
    assert any(isinstance(m, GatherROIAlign) for m in optimized.modules())
    for image in images():
        with torch.no_grad():
            ref = segmenter([{"image": image}])[0]["instances"]
            got = optimized([{"image": image}])[0]["instances"]
        assert len(got) == len(ref) > 0
        assert torch.allclose(got.scores, ref.scores, atol=1e-4)
        assert torch.allclose(got.pred_boxes.tensor, ref.pred_boxes.tensor, atol=0.05)


def test_fold_batch_norm_needs_eval_mode(segmenter):
    model = copy.deepcopy(segmenter).train()
    with pytest.raises(ValueError, match="eval mode"):
        fold_batch_norm(model)
    model.eval()
    assert fold_batch_norm(model) > 0
    assert fold_batch_norm(model) == 0  # nothing left to fold
