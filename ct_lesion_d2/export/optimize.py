"""Make a trained model faster at inference on the CPU without changing what it computes.

Three measured changes (docs/BENCHMARKS.md), each optional:

- BatchNorm folding: in inference mode a BatchNorm after a convolution is an affine map per
  channel, so it is folded into the convolution's weight and bias, and one pass over every
  feature map of the backbone disappears.
- Channels-last weights: oneDNN convolutions run faster in NHWC; PyTorch picks NHWC for a
  convolution when its weight is channels-last, and the layout then propagates.
- Threaded RoIAlign: torchvision's CPU ``roi_align`` runs on one core however many PyTorch has
  (about a third of a ResNet18_T1 slice at 1,000 proposals). The RoIs are independent, so
  they are split into one chunk per thread and pooled by torchvision's own kernel in parallel
  (it releases the GIL); the result is bit-identical to one call.

The first two change rounding only (about 1e-6 relative); the AP on real slices is checked in
docs/BENCHMARKS.md. They leave the model's parameters in a state that cannot be trained further
(BatchNorm is gone): apply them to an inference copy only.
"""
import logging
from concurrent.futures import ThreadPoolExecutor

import torch
from detectron2.layers import Conv2d, FrozenBatchNorm2d
from detectron2.modeling.poolers import ROIPooler
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

__all__ = ["ThreadedROIAlign", "fold_batch_norm", "optimize_for_inference"]

logger = logging.getLogger(__name__)

# Below this many RoIs the thread hand-off costs more than it saves.
_MIN_ROIS_PER_THREAD = 16


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


class ThreadedROIAlign(nn.Module):
    """Runs a ``ROIAlign`` module on chunks of the RoIs in parallel threads (CPU inference).

    Falls back to one call of the wrapped module while tracing or scripting, when gradients
    are needed, on CUDA, and for few RoIs. The output is identical to one call.
    """

    def __init__(self, roi_align, num_threads=None):
        """
        Args:
            roi_align (nn.Module): a Detectron2 ``ROIAlign`` (called as ``(input, rois)``).
            num_threads (int or None): chunks run at once; None = ``torch.get_num_threads()``.
        """
        super().__init__()
        self.roi_align = roi_align
        self.num_threads = num_threads
        self._executor = None
        self._executor_threads = 0

    def _chunks(self, rois):
        threads = self.num_threads or torch.get_num_threads()
        return min(threads, len(rois) // _MIN_ROIS_PER_THREAD)

    def forward(self, input, rois):
        chunks = self._chunks(rois)
        if (
            chunks < 2
            or input.is_cuda
            or torch.jit.is_tracing()
            or torch.jit.is_scripting()
            or (torch.is_grad_enabled() and input.requires_grad)
        ):
            return self.roi_align(input, rois)
        if self._executor is None or self._executor_threads < chunks:
            self._executor = ThreadPoolExecutor(chunks, thread_name_prefix="roi_align")
            self._executor_threads = chunks
        parts = self._executor.map(lambda r: self._pool(input, r), rois.chunk(chunks))
        return torch.cat(list(parts))

    def _pool(self, input, rois):
        # grad mode is per thread: the workers would otherwise record autograd graphs
        with torch.no_grad():
            return self.roi_align(input, rois)

    def __getstate__(self):
        # a thread pool cannot be pickled or deep-copied; it is recreated on demand
        state = self.__dict__.copy()
        state["_executor"], state["_executor_threads"] = None, 0
        return state

    def __repr__(self):
        return f"ThreadedROIAlign({self.roi_align!r}, num_threads={self.num_threads})"


def thread_roi_poolers(model, num_threads=None):
    """Wrap the single-kernel RoIAlign of every ``ROIPooler`` in ``ThreadedROIAlign``.

    Returns:
        int: the number of pooler levels wrapped.
    """
    wrapped = 0
    for module in model.modules():
        if not isinstance(module, ROIPooler):
            continue
        for i, level in enumerate(module.level_poolers):
            if not isinstance(level, ThreadedROIAlign):
                module.level_poolers[i] = ThreadedROIAlign(level, num_threads)
                wrapped += 1
    return wrapped


def optimize_for_inference(model, *, fold_bn=True, channels_last=True, threaded_pooling=True):
    """Put a model in eval mode and apply the CPU inference optimisations, in place.

    Args:
        model (nn.Module): a Detectron2 model (``GeneralizedRCNN`` or ``CTMaskNetClassifier``).
        fold_bn (bool): fold BatchNorm into the preceding convolutions.
        channels_last (bool): store the convolution weights channels-last (CPU only; on CUDA
            this is left to the user, since it only helps with tensor cores).
        threaded_pooling (bool): pool RoIs in ``torch.get_num_threads()`` threads (CPU).

    Returns:
        nn.Module: ``model`` itself, in eval mode.
    """
    model.eval()
    on_cpu = all(not p.is_cuda for p in model.parameters())
    folded = fold_batch_norm(model) if fold_bn else 0
    if channels_last and on_cpu:
        model.to(memory_format=torch.channels_last)
    wrapped = thread_roi_poolers(model) if threaded_pooling and on_cpu else 0
    logger.info(
        f"optimize_for_inference: {folded} BatchNorm folded, channels-last "
        f"{bool(channels_last and on_cpu)}, {wrapped} RoI pooler level(s) threaded"
    )
    return model
