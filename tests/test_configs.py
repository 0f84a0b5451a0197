import glob
import os

import pytest
import torch
from detectron2.modeling import build_model

import ct_lesion_d2  # noqa: F401
from ct_lesion_d2.model_zoo import (
    CONFIG_DIR,
    SEGMENTATION_VARIANTS,
    TORCHVISION_PREDICTOR_EXTRA,
    get_config,
)

ALL_CONFIGS = sorted(glob.glob(os.path.join(CONFIG_DIR, "**", "*.yaml"), recursive=True))


@pytest.mark.parametrize("path", ALL_CONFIGS, ids=os.path.basename)
def test_every_config_merges(path):
    cfg = get_config(path)
    assert cfg.MODEL.BACKBONE.NAME == "build_ct_lesion_resnet_fpn_backbone"


@pytest.mark.parametrize("name", list(SEGMENTATION_VARIANTS))
def test_state_dict_matches_spec(name):
    reference = SEGMENTATION_VARIANTS[name][2]
    model = build_model(get_config(name, ["MODEL.DEVICE", "cpu"]))
    elements = sum(t.numel() for t in model.state_dict().values())
    assert abs(elements + TORCHVISION_PREDICTOR_EXTRA - reference) / reference < 1e-3


@pytest.mark.parametrize(
    "name,feature,stages",
    [
        ("mask_rcnn_R18", "p5", ["res2", "res3", "res4", "res5"]),
        ("mask_rcnn_R18_T1", "p4", ["res2", "res3", "res4"]),
        ("mask_rcnn_R34_T2", "p3", ["res2", "res3"]),
    ],
)
def test_truncation_removes_stages(name, feature, stages):
    model = build_model(get_config(name, ["MODEL.DEVICE", "cpu"]))
    backbone = model.backbone
    assert list(backbone.output_shape()) == [feature]
    bottom_up_stages = sorted({n.split(".")[0] for n, _ in backbone.bottom_up.named_parameters()})
    assert bottom_up_stages == sorted(stages + ["stem"])
    # one FPN level: one lateral and one output conv, no top block
    assert [n for n, _ in backbone.named_children() if n.startswith("fpn_")] == [
        f"fpn_lateral{feature[1]}",
        f"fpn_output{feature[1]}",
    ]
    assert backbone.top_block is None
    anchors = model.proposal_generator.anchor_generator.num_cell_anchors
    assert anchors == [30]


def test_contradictory_out_features_are_refused():
    cfg = get_config(
        "mask_rcnn_R18_T1", ["MODEL.DEVICE", "cpu", "MODEL.FPN.IN_FEATURES", "['res5']"]
    )
    with pytest.raises(ValueError, match="contradicts MODEL.CT_BACKBONE"):
        build_model(cfg)


def test_r50_baseline_has_four_levels_and_standard_mask_head():
    model = build_model(get_config("mask_rcnn_R50", ["MODEL.DEVICE", "cpu"]))
    assert list(model.backbone.output_shape()) == ["p2", "p3", "p4", "p5"]
    convs = [m for m in model.roi_heads.mask_head.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs[:4]] == [256] * 4
