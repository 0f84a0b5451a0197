"""RoIAlign as a weighted gather of feature vectors, for CPU training and inference.

With a fixed sampling ratio, every output cell of RoIAlign is a fixed linear combination of at
most ``sampling_ratio**2 * 4`` feature vectors (the bilinear neighbours of its sample points).
Computing the indices and weights of those combinations takes a few vectorised tensor ops;
``torch.nn.functional.embedding_bag`` with ``per_sample_weights`` then sums the weighted
vectors, multi-threaded and vectorised over channels (the feature map read channels-last, one
row per pixel). torchvision's CPU ``roi_align`` loops over RoIs, channels and samples on a
single core, forward and backward, and is the largest single cost of a ResNet18_T1 slice at
1,000 proposals (docs/BENCHMARKS.md) and of a training iteration.

The backward is autograd's ``embedding_bag`` backward with respect to its weight matrix (the
feature map): the output gradients scaled by the same weights and summed into the pixels they
came from, so no custom autograd function is needed. The bilinear weights depend on the boxes
only, which Detectron2 detaches, so no gradient flows to the boxes (nor does it in torchvision).

The sample positions, the out-of-map rule and the clamping follow torchvision's CPU kernel
operation by operation; results and input gradients differ from it by float rounding only
(about 1e-6), which ``tests/test_gather_roi_align.py`` checks against torchvision at float64,
boundary RoIs included.
"""

import torch
from detectron2.layers import ROIAlign
from torch import nn
from torch.nn import functional as F

__all__ = ["GatherROIAlign", "gather_roi_align", "use_gather_roi_align"]


def _axis_neighbours(coords, size):
    """Bilinear neighbours along one axis, as in torchvision's ``bilinear_interpolate``.

    Args:
        coords (Tensor): sample coordinates in feature-map cells.
        size (int): the map's extent along the axis.

    Returns:
        tuple[Tensor]: low and high indices (int64), their weights, and validity (bool).
    """
    valid = (coords >= -1.0) & (coords <= size)
    coords = coords.clamp(min=0)
    low = coords.floor().long()
    at_end = low >= size - 1
    low = low.clamp(max=size - 1)
    high = torch.where(at_end, low, low + 1)
    coords = torch.where(at_end, low.to(coords.dtype), coords)
    frac = coords - low
    return low, high, 1 - frac, frac, valid


def gather_roi_align(input, rois, output_size, spatial_scale, sampling_ratio, aligned=True):
    """RoIAlign with a fixed sampling ratio, same arguments and result as torchvision's.

    Args:
        input (Tensor): (N, C, H, W) features (channels-last avoids one copy).
        rois (Tensor): (R, 5) rows ``[batch index, x0, y0, x1, y1]`` in image coordinates.
        output_size (int or tuple[int, int]): pooled height and width.
        spatial_scale (float): image-to-feature scale.
        sampling_ratio (int): samples per bin along each axis; must be positive.
        aligned (bool): shift by half a pixel (Detectron2's ROIAlignV2).

    Returns:
        Tensor: (R, C, pooled height, pooled width).
    """
    if sampling_ratio <= 0:
        raise ValueError("gather_roi_align needs a fixed sampling ratio (> 0)")
    ph, pw = (output_size, output_size) if isinstance(output_size, int) else output_size
    n, channels, height, width = input.shape
    num_rois = rois.shape[0]
    if num_rois == 0:
        return input.new_zeros((0, channels, ph, pw))
    dtype = input.dtype
    rois = rois.to(dtype)
    offset = 0.5 if aligned else 0.0
    x0, y0, x1, y1 = (rois[:, i] * spatial_scale - offset for i in range(1, 5))
    roi_w, roi_h = x1 - x0, y1 - y0
    if not aligned:
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    bin_w, bin_h = roi_w / pw, roi_h / ph
    step = torch.arange(sampling_ratio, dtype=dtype, device=input.device) + 0.5
    # roi_start + p * bin_size + (i + 0.5) * bin_size / grid, in torchvision's order of operations
    ys = (
        y0[:, None, None]
        + torch.arange(ph, dtype=dtype, device=input.device)[None, :, None] * bin_h[:, None, None]
        + step * bin_h[:, None, None] / sampling_ratio
    )
    xs = (
        x0[:, None, None]
        + torch.arange(pw, dtype=dtype, device=input.device)[None, :, None] * bin_w[:, None, None]
        + step * bin_w[:, None, None] / sampling_ratio
    )
    # (R, ph, 1, sy, 1) against (R, 1, pw, 1, sx)
    y_lo, y_hi, wy_lo, wy_hi, y_ok = (t[:, :, None, :, None] for t in _axis_neighbours(ys, height))
    x_lo, x_hi, wx_lo, wx_hi, x_ok = (t[:, None, :, None, :] for t in _axis_neighbours(xs, width))
    scale = (y_ok & x_ok).to(dtype) / (sampling_ratio * sampling_ratio)
    base = (rois[:, 0].long() * (height * width))[:, None, None, None, None]
    index = torch.stack(
        torch.broadcast_tensors(
            base + y_lo * width + x_lo,
            base + y_lo * width + x_hi,
            base + y_hi * width + x_lo,
            base + y_hi * width + x_hi,
        ),
        dim=-1,
    )
    weight = (
        torch.stack(
            torch.broadcast_tensors(wy_lo * wx_lo, wy_lo * wx_hi, wy_hi * wx_lo, wy_hi * wx_hi),
            dim=-1,
        )
        * scale[..., None]
    )
    table = input.permute(0, 2, 3, 1).reshape(n * height * width, channels).contiguous()
    pooled = F.embedding_bag(
        index.reshape(num_rois * ph * pw, -1),
        table,
        per_sample_weights=weight.reshape(num_rois * ph * pw, -1),
        mode="sum",
    )
    return pooled.reshape(num_rois, ph, pw, channels).permute(0, 3, 1, 2)


class GatherROIAlign(nn.Module):
    """Drop-in for a Detectron2 ``ROIAlign`` module using :func:`gather_roi_align` on the CPU.

    Differentiable with respect to the features, so it serves training as well. Falls back to
    the wrapped module on CUDA, while tracing or scripting (the exported graph keeps
    torchvision's operator), and for an adaptive sampling ratio (0).
    """

    def __init__(self, roi_align):
        """
        Args:
            roi_align (nn.Module): a Detectron2 ``ROIAlign`` (``output_size``,
                ``spatial_scale``, ``sampling_ratio``, ``aligned``).
        """
        super().__init__()
        self.roi_align = roi_align

    def forward(self, input, rois):
        ra = self.roi_align
        if (
            ra.sampling_ratio <= 0
            or input.is_cuda
            or torch.jit.is_tracing()
            or torch.jit.is_scripting()
        ):
            return ra(input, rois)
        return gather_roi_align(
            input, rois, ra.output_size, ra.spatial_scale, ra.sampling_ratio, ra.aligned
        )

    def __repr__(self):
        return f"GatherROIAlign({self.roi_align!r})"


def use_gather_roi_align(pooler):
    """Wrap every ``ROIAlign`` level of a Detectron2 ``ROIPooler`` in :class:`GatherROIAlign`.

    The pooler is changed in place; it has no parameters, so checkpoints are unaffected.

    Args:
        pooler (ROIPooler): the pooler of a box, mask or keypoint head.

    Returns:
        int: the number of levels wrapped (levels already wrapped, or of another pooler type
        such as ``ROIPool``, are left as they are).
    """
    wrapped = 0
    for i, level in enumerate(pooler.level_poolers):
        if isinstance(level, ROIAlign):
            pooler.level_poolers[i] = GatherROIAlign(level)
            wrapped += 1
    return wrapped
