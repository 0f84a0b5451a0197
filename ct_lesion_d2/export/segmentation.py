"""Export the lesion Mask R-CNN through Detectron2's ``TracingAdapter``, run and check the result.

The traced graph is ``GeneralizedRCNN.inference(..., do_postprocess=False)`` on one image: from
the ``(3, H, W)`` input image (0-255, ``INPUT.FORMAT`` channel order, already resized as for
the eager model) to the boxes, scores, classes and 28 x 28 mask probabilities in input
coordinates. Rescaling to the original size and pasting the masks stay in Python
(``detector_postprocess``, as in the eager model), so :class:`ExportedSegmenter` returns
exactly what ``model(batched_inputs)`` returns.
"""

import copy

import torch
from detectron2.export import TracingAdapter
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, Instances

from ..utils.files import refuse_existing
from .optimize import fold_batch_norm
from .tracing import (
    ONNX_DEFAULT_OPSET,
    ExportedGraph,
    ExportError,
    check_format,
    export_graph,
    max_abs_difference,
)

__all__ = [
    "PASTED_MASK_TOLERANCE",
    "SEGMENTATION_TOLERANCES",
    "ExportedSegmenter",
    "compare_segmentation",
    "export_segmenter",
    "segmentation_adapter",
]

# Largest differences accepted between the eager and the exported model, per output: boxes in
# pixels, scores and mask probabilities absolute; classes and the image size must be equal.
SEGMENTATION_TOLERANCES = {
    "pred_boxes": 0.05,
    "scores": 1e-4,
    "pred_masks": 1e-3,
    "pred_classes": 0,
    "image_size": 0,
}
# Largest fraction of pasted mask pixels (detections x height x width) allowed to differ.
PASTED_MASK_TOLERANCE = 1e-4


def _inference(model, inputs):
    """One image through the detector, without the rescaling and mask pasting."""
    return [{"instances": model.inference(inputs, do_postprocess=False)[0]}]


def segmentation_adapter(model, image):
    """A ``TracingAdapter`` of the segmenter on one image, and the names of its flat outputs.

    Args:
        model (GeneralizedRCNN): in eval mode.
        image (Tensor): (3, H, W) model input.

    Returns:
        (TracingAdapter, list[str], list[Tensor]): the adapter, output names (the
        ``Instances`` fields, then ``image_size``) and its eager outputs on ``image``.
    """
    if model.training:
        raise ExportError("the segmenter must be in eval mode (model.eval()) to be exported")
    adapter = TracingAdapter(model, [{"image": image}], _inference).eval()
    with torch.no_grad():
        outputs = adapter(image)  # also fills adapter.outputs_schema
    instances_schema = adapter.outputs_schema.schemas[0].schemas[0]
    if any(size != 1 for size in instances_schema.sizes):
        raise ExportError(f"unexpected nested output fields {instances_schema.keys}")
    names = list(instances_schema.keys) + ["image_size"]
    return adapter, names, list(outputs)


def export_segmenter(
    model, image, fmt, path, *, opset=ONNX_DEFAULT_OPSET, fold_bn=True, overwrite=False, meta=None
):
    """Trace the segmenter on ``image`` and write it as TorchScript or ONNX.

    The graph takes any image size (ONNX: dynamic height and width) and any number of
    detections. A copy of the model is exported; ``model`` itself is left as it is.

    Args:
        model (GeneralizedRCNN): the segmenter, in eval mode.
        image (Tensor): (3, H, W) example input (a real slice, so that detections exist).
        fmt (str): "torchscript" or "onnx".
        path (str): output file (``.ts`` / ``.onnx``); a ``.json`` sidecar is written beside.
        opset (int): ONNX opset (>= 16 for ROIAlignV2).
        fold_bn (bool): fold BatchNorm into the convolutions before tracing.
        overwrite (bool): replace existing files.
        meta (dict or None): extra entries for the sidecar (config, weights...).

    Returns:
        str: ``path``.
    """
    check_format(fmt)
    refuse_existing((path, path + ".json"), overwrite)  # before tracing
    model = copy.deepcopy(model).eval()
    if fold_bn:
        fold_batch_norm(model)
    adapter, names, _ = segmentation_adapter(model, image)
    return export_graph(
        adapter,
        (image,),
        fmt,
        path,
        input_names=["image"],
        output_names=names,
        dynamic_axes={"image": {1: "height", 2: "width"}, **{n: {0: "n"} for n in names[:-1]}},
        meta={"kind": "segmenter", "fold_bn": fold_bn, **(meta or {})},
        opset=opset,
        overwrite=overwrite,
    )


def instances_from_outputs(outputs):
    """``Instances`` in input coordinates from the named outputs of the segmenter graph."""
    height, width = (int(v) for v in outputs["image_size"])
    instances = Instances((height, width))
    for name, value in outputs.items():
        if name == "image_size":
            continue
        instances.set(name, Boxes(value) if name == "pred_boxes" else value)
    return instances


class ExportedSegmenter:
    """An exported segmenter with the eager model's calling convention.

    ``segmenter(batched_inputs)`` takes Detectron2's ``list[dict]`` (``"image"``, optional
    ``"height"``/``"width"``) and returns ``[{"instances": Instances}]`` rescaled to
    ``height`` x ``width`` with pasted masks, like ``GeneralizedRCNN`` in eval mode; it can be
    passed to ``detectron2.evaluation.inference_on_dataset``.
    """

    def __init__(self, path, num_threads=None):
        """
        Args:
            path (str): a ``.ts`` or ``.onnx`` file written by :func:`export_segmenter`.
            num_threads (int or None): ONNX Runtime threads (default: PyTorch's).
        """
        self.graph = ExportedGraph(path, num_threads)
        if self.graph.meta.get("kind") != "segmenter":
            kind = self.graph.meta.get("kind")
            raise ExportError(f"{path}: not a segmenter export (kind {kind!r})")

    def raw(self, image):
        """The graph's named outputs for one ``(3, H, W)`` image (no rescaling, no pasting)."""
        return self.graph(image)

    def __call__(self, batched_inputs):
        results = []
        for inputs in batched_inputs:
            instances = instances_from_outputs(self.raw(inputs["image"]))
            height = inputs.get("height", instances.image_size[0])
            width = inputs.get("width", instances.image_size[1])
            results.append({"instances": detector_postprocess(instances, height, width)})
        return results


def compare_segmentation(reference, candidate, tolerances=None):
    """Compare the raw outputs of the eager and the exported segmenter on one image.

    Args:
        reference, candidate (dict[str, Tensor]): named outputs (see ``segmentation_adapter``).
        tolerances (dict or None): per-output maximum difference (default
            ``SEGMENTATION_TOLERANCES``).

    Returns:
        dict: ``detections`` (reference, candidate), ``max_abs_diff`` per output (``inf`` when
        the numbers of detections differ), ``pasted_mask_pixels_differing`` (fraction of the
        masks pasted at the input size; None without masks or with different counts) and
        ``ok``.
    """
    tolerances = SEGMENTATION_TOLERANCES if tolerances is None else tolerances
    if set(reference) != set(candidate):
        raise ExportError(f"output names differ: {sorted(reference)} vs {sorted(candidate)}")
    diffs = {
        name: max_abs_difference(reference[name].float(), candidate[name].float())
        for name in reference
    }
    ok = all(diff <= tolerances.get(name, 0) for name, diff in diffs.items())
    detections = (len(reference["scores"]), len(candidate["scores"]))
    pasted = None
    if "pred_masks" in reference and ok:
        masks = []
        for outputs in (reference, candidate):
            instances = instances_from_outputs(outputs)
            masks.append(detector_postprocess(instances, *instances.image_size).pred_masks)
        pasted = (masks[0] != masks[1]).sum().item() / max(masks[0].numel(), 1)
        ok = pasted <= PASTED_MASK_TOLERANCE
    return {
        "detections": detections,
        "max_abs_diff": diffs,
        "pasted_mask_pixels_differing": pasted,
        "ok": ok,
    }
