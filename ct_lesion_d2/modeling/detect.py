"""The detector pass of the project's models, written once.

``GeneralizedRCNN.inference`` keeps only the post-processed instances. The predictor, the
classifier, the classifier export and the RoI-batch cache also need what it computes on the way
(the features and proposals the ranked RoI batch is built from, and the raw mask logits the
analysis figures show), so they all run :func:`detect`: Detectron2's own steps
(``preprocess_image``, backbone, proposal generator, RoI heads), called once, in order.

``preprocess_image`` pads a batch to its largest image. The padding enters the GroupNorm
statistics of a GN backbone and the RPN's anchors over it, so a slice's detections would depend
on the other slices of its batch; the callers that batch slices of mixed sizes (the classifier,
the predictor) run :func:`same_size_groups` apart.
"""

import contextlib
from collections import OrderedDict
from typing import Dict, List, NamedTuple, Optional

import torch
from detectron2.structures import ImageList, Instances

__all__ = ["DetectorPass", "detect", "kept_mask_logits", "same_size_groups"]


class DetectorPass(NamedTuple):
    """What one detector pass computed, in the resized frame the model saw.

    Attributes:
        images (ImageList): the preprocessed batch; ``image_sizes`` are the resized sizes.
        features (dict[str, Tensor]): backbone features.
        proposals (list[Instances]): RPN proposals, one per image.
        instances (list[Instances] or None): the RoI heads' detections, not yet rescaled to the
            input size (None when the RoI heads were not run); with ``pred_mask_logits``
            (R, 28, 28) when asked for.
    """

    images: ImageList
    features: Dict[str, torch.Tensor]
    proposals: List[Instances]
    instances: Optional[List[Instances]]


@contextlib.contextmanager
def kept_mask_logits(roi_heads):
    """Collect the mask predictor's outputs (raw logits) while the block runs.

    The hook is removed when the block ends, whatever happens in it.

    Yields:
        list[Tensor]: one (R, C, 28, 28) tensor per mask head call, detached.
    """
    logits = []
    predictor = roi_heads.mask_head.predictor
    handle = predictor.register_forward_hook(lambda m, i, output: logits.append(output.detach()))
    try:
        yield logits
    finally:
        handle.remove()


def same_size_groups(batched_inputs):
    """The indices of ``batched_inputs`` grouped by the size of their ``"image"``.

    Each group is a batch that needs no padding beyond the model's size divisibility, so a
    slice gives the same detections alone as in any batch (see the module docstring).

    Returns:
        list[list[int]]: the groups in the order their first input appears; one group when all
        inputs have one size.
    """
    groups = OrderedDict()
    for i, x in enumerate(batched_inputs):
        groups.setdefault(tuple(x["image"].shape[-2:]), []).append(i)
    return list(groups.values())


def detect(model, batched_inputs, *, roi_heads=True, mask_logits=False):
    """Run the detector of ``model`` (a ``GeneralizedRCNN``) in inference mode.

    Args:
        model (GeneralizedRCNN): a segmenter or a ``CTMaskNetClassifier``.
        batched_inputs (list[dict]): Detectron2 inputs with ``"image"``.
        roi_heads (bool): also run the RoI heads (the classifier builds its ranked batch from
            the proposals instead).
        mask_logits (bool): attach ``pred_mask_logits`` (the logits of each instance's
            predicted class, before the sigmoid) to the instances; needs a mask head.

    Returns:
        DetectorPass
    """
    images = model.preprocess_image(batched_inputs)
    features = model.backbone(images.tensor)
    proposals, _ = model.proposal_generator(images, features, None)
    if not roi_heads:
        return DetectorPass(images, features, proposals, None)
    if not mask_logits:
        instances, _ = model.roi_heads(images, features, proposals, None)
        return DetectorPass(images, features, proposals, instances)
    with kept_mask_logits(model.roi_heads) as kept:
        instances, _ = model.roi_heads(images, features, proposals, None)
    _attach_mask_logits(instances, torch.cat(kept) if kept else None, images.tensor)
    return DetectorPass(images, features, proposals, instances)


def _attach_mask_logits(instances, logits, like):
    """Give each instance the 28 x 28 logits of its predicted class (zeros without any)."""
    start = 0
    for inst in instances:
        n = len(inst)
        chosen = logits[start : start + n] if logits is not None else None
        if chosen is not None and n:
            channel = inst.pred_classes if chosen.shape[1] > 1 else inst.pred_classes * 0
            inst.pred_mask_logits = chosen[torch.arange(n, device=chosen.device), channel]
        else:
            inst.pred_mask_logits = like.new_zeros((n, 28, 28))
        start += n
