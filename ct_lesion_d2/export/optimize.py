"""Make a trained model faster at inference on the CPU without changing what it computes.

Three measured changes (docs/BENCHMARKS.md), each optional:

- BatchNorm folding: in inference mode a BatchNorm after a convolution is an affine map per
  channel, so it is folded into the convolution's weight and bias, and one pass over every
  feature map of the backbone disappears.
- Channels-last weights: oneDNN convolutions run faster in NHWC; PyTorch picks NHWC for a
  convolution when its weight is channels-last, and the layout then propagates.
- RoIAlign as a gather (``modeling/gather_roi_align.py``): torchvision's CPU ``roi_align`` runs
  on one core and was the largest single cost of a ResNet18_T1 slice at 1,000 proposals; the same
  bilinear sums as one multi-threaded ``embedding_bag`` over the channels-last feature map;
  the box head then reads the gathered features in their channels-last order.

All three change float rounding only (about 1e-6 relative); the AP on real slices is checked in
docs/BENCHMARKS.md. They leave the model in a state that should not be trained further
(BatchNorm is gone): apply them to an inference copy only.
"""

import logging

import torch
from detectron2.layers import Conv2d, FrozenBatchNorm2d
from detectron2.modeling.poolers import ROIPooler
from detectron2.modeling.roi_heads.box_head import FastRCNNConvFCHead
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from ..modeling.gather_roi_align import GatherROIAlign, use_gather_roi_align

__all__ = [
    "ChannelsLastFlatten",
    "flatten_box_head_channels_last",
    "fold_batch_norm",
    "gather_roi_poolers",
    "optimize_for_inference",
]

logger = logging.getLogger(__name__)


def fold_batch_norm(model):
    """Fold every BatchNorm that follows a Detectron2 ``Conv2d`` into that convolution, in place.

    Args:
        model (nn.Module): a model in eval mode (BatchNorm must use its running statistics).

    Returns:
        int: the number of BatchNorm layers folded.

    Raises:
        ValueError: the model is in training mode.
    """
    if model.training:
        raise ValueError(
            "fold_batch_norm needs a model in eval mode (model.eval()): in training mode "
            "BatchNorm normalises with batch statistics, which cannot be folded"
        )
    folded = 0
    for module in model.modules():
        norm = getattr(module, "norm", None)
        if not isinstance(module, Conv2d) or not isinstance(
            norm, (nn.modules.batchnorm._BatchNorm, FrozenBatchNorm2d)
        ):
            continue
        weight, bias = fuse_conv_bn_weights(
            module.weight,
            module.bias,
            norm.running_mean,
            norm.running_var,
            norm.eps,
            norm.weight,
            norm.bias,
        )
        module.weight, module.bias = weight, bias
        module.norm = None
        folded += 1
    return folded


def gather_roi_poolers(model):
    """Replace the RoIAlign of every ``ROIPooler`` level by :class:`GatherROIAlign`, in place.

    Returns:
        int: the number of pooler levels replaced (none where the model was built with
        ``MODEL.CT_ROI_POOLING.GATHER``, which gathers already).
    """
    return sum(use_gather_roi_align(m) for m in model.modules() if isinstance(m, ROIPooler))


class ChannelsLastFlatten(nn.Module):
    """Flatten (N, C, H, W) in (H, W, C) order: a view of a channels-last tensor, no copy."""

    def forward(self, x):
        return x.permute(0, 2, 3, 1).flatten(1)


def flatten_box_head_channels_last(model):
    """Let a single-level FC box head read gathered (channels-last) RoI features without a copy.

    ``GatherROIAlign`` returns (R, C, h, w) features stored channels-last; the head's
    ``nn.Flatten`` would copy them into (C, h, w) order (50 MB at 1,000 RoIs). Instead the
    columns of the first fully connected layer are permuted to (h, w, C) order and the features
    are flattened in that order, which is the same sum in another order. Multi-level poolers
    (the R50-FPN baseline) write NCHW features, so their heads are left as they are.

    Returns:
        bool: whether the head was changed.
    """
    heads = getattr(model, "roi_heads", None)
    head = getattr(heads, "box_head", None)
    if not isinstance(head, FastRCNNConvFCHead) or head.conv_norm_relus or not head.fcs:
        return False
    if not isinstance(getattr(head, "flatten", None), nn.Flatten):
        return False
    if len(heads.box_pooler.level_poolers) != 1:
        return False
    height, width = heads.box_pooler.output_size
    fc = head.fcs[0]
    channels = fc.in_features // (height * width)
    weight = fc.weight.detach().reshape(fc.out_features, channels, height, width)
    fc.weight = nn.Parameter(
        weight.permute(0, 2, 3, 1).reshape(fc.out_features, -1).contiguous(),
        requires_grad=fc.weight.requires_grad,
    )
    head.flatten = ChannelsLastFlatten()
    return True


def optimize_for_inference(model, *, fold_bn=True, channels_last=True, gather_pooling=True):
    """Put a model in eval mode and apply the CPU inference optimisations, in place.

    Args:
        model (nn.Module): a Detectron2 model (``GeneralizedRCNN`` or ``CTMaskNetClassifier``).
        fold_bn (bool): fold BatchNorm into the preceding convolutions.
        channels_last (bool): store the convolution weights channels-last (CPU only; on CUDA
            this is left to the user, since it only helps with tensor cores).
        gather_pooling (bool): RoIAlign as a weighted gather (:class:`GatherROIAlign`, CPU),
            read by a single-level box head without a transpose
            (:func:`flatten_box_head_channels_last`).

    Returns:
        nn.Module: ``model`` itself, in eval mode.
    """
    model.eval()
    on_cpu = all(not p.is_cuda for p in model.parameters())
    folded = fold_batch_norm(model) if fold_bn else 0
    if channels_last and on_cpu:
        model.to(memory_format=torch.channels_last)
    replaced = gather_roi_poolers(model) if gather_pooling and on_cpu else 0
    gathered = (
        gather_pooling and on_cpu and any(isinstance(m, GatherROIAlign) for m in model.modules())
    )
    head = flatten_box_head_channels_last(model) if gathered else False
    logger.info(
        f"optimize_for_inference: {folded} BatchNorm folded, channels-last "
        f"{bool(channels_last and on_cpu)}, {replaced} RoIAlign level(s) as gathers, box head "
        f"reading them channels-last {head}"
    )
    return model
