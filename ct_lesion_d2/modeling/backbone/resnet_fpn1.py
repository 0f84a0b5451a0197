"""Truncated ResNet18/34 with a single FPN level (COVID-CT-Mask-Net), and the R50-FPN baseline.

Detectron2's ``ResNet`` only creates the stages up to its last requested output, so removing
the last one or two stages (truncations T1, T2) leaves no parameters of them in the model.
Detectron2's ``FPN`` with a single input feature and no top block is exactly the paper's one
level: a 1x1 lateral conv and a 3x3 output conv, both with bias, and no top-down path.
"""

import torch
from detectron2.modeling import BACKBONE_REGISTRY, FPN, build_resnet_backbone

_STAGES = ("res2", "res3", "res4", "res5")


def fpn_in_features(truncation, fpn_levels):
    """The ResNet stages an FPN reads.

    Args:
        truncation (int): number of final stages removed (0, 1 or 2).
        fpn_levels (int): 1 for the paper's single level, 4 for the standard FPN (T0 only).

    Returns:
        list[str]: stage names, e.g. ``["res4"]`` for T1 with one level.
    """
    if truncation not in (0, 1, 2):
        raise ValueError(f"MODEL.CT_BACKBONE.TRUNCATION must be 0, 1 or 2, got {truncation}")
    if fpn_levels not in (1, 4):
        raise ValueError(f"MODEL.CT_BACKBONE.FPN_LEVELS must be 1 or 4, got {fpn_levels}")
    if fpn_levels == 4 and truncation != 0:
        raise ValueError("a 4-level FPN needs all ResNet stages (MODEL.CT_BACKBONE.TRUNCATION 0)")
    kept = _STAGES[: len(_STAGES) - truncation]
    return list(kept[-fpn_levels:])


@BACKBONE_REGISTRY.register()
def build_ct_lesion_resnet_fpn_backbone(cfg, input_shape):
    """ResNet (BasicBlock for depth 18/34) truncated by ``MODEL.CT_BACKBONE.TRUNCATION``, with an
    FPN of ``MODEL.CT_BACKBONE.FPN_LEVELS`` levels and no extra pooled level.

    ``MODEL.RESNETS.OUT_FEATURES`` and ``MODEL.FPN.IN_FEATURES`` are derived from the truncation;
    values set in the config must agree with it. ``MODEL.CT_BACKBONE.CHANNELS_LAST`` stores the
    convolution weights channels-last.

    Returns:
        FPN: a Backbone whose outputs are ``p<k>`` for each stage it reads (``p4`` for T1).
    """
    ct = cfg.MODEL.CT_BACKBONE
    in_features = fpn_in_features(ct.TRUNCATION, ct.FPN_LEVELS)
    for key, value in (
        ("MODEL.RESNETS.OUT_FEATURES", cfg.MODEL.RESNETS.OUT_FEATURES),
        ("MODEL.FPN.IN_FEATURES", cfg.MODEL.FPN.IN_FEATURES),
    ):
        if list(value) and list(value) != in_features:
            raise ValueError(
                f"{key}={list(value)} contradicts MODEL.CT_BACKBONE (TRUNCATION "
                f"{ct.TRUNCATION}, FPN_LEVELS {ct.FPN_LEVELS}) which reads {in_features}; "
                "leave it empty or make it agree"
            )
    resnet_cfg = cfg.clone()
    resnet_cfg.defrost()
    resnet_cfg.MODEL.RESNETS.OUT_FEATURES = in_features
    bottom_up = build_resnet_backbone(resnet_cfg, input_shape)
    backbone = FPN(
        bottom_up=bottom_up,
        in_features=in_features,
        out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        top_block=None,
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
    if ct.CHANNELS_LAST:
        # oneDNN runs a convolution NHWC when its weight is channels-last, forward and backward;
        # the layout then propagates to the heads. The parameters keep their shapes and values.
        backbone.to(memory_format=torch.channels_last)
    return backbone
