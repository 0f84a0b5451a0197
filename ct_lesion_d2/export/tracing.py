"""Trace a module to TorchScript or ONNX and run the result: the pieces shared by the exporters.

Models go through Detectron2's ``TracingAdapter`` (see ``segmentation.py`` and
``classification.py``), which flattens Detectron2's ``list[dict]`` inputs and ``Instances``
outputs into tuples of tensors; this module writes such a flat module to a file, with a JSON
sidecar that names its inputs and outputs, and loads it back as a callable on tensors.

Every graph here takes float32 tensors: images are traced and run as float 0-255 whatever the
dtype they come in (Detectron2's mappers give uint8 images, which the eager model converts in
``preprocess_image``), so one exported file serves both.
"""

import json
import os

import numpy as np
import torch

from ..utils.files import refuse_existing, write_json_atomic
from .compat import ensure_detectron2_export

__all__ = [
    "EXPORT_FORMATS",
    "ExportError",
    "ExportedGraph",
    "check_exportable",
    "check_format",
    "export_graph",
    "max_abs_difference",
]

# format -> file extension
EXPORT_FORMATS = {"torchscript": ".ts", "onnx": ".onnx"}
# torchvision writes RoIAlign with aligned=True (Detectron2's ROIAlignV2) from opset 16 on.
ONNX_MIN_OPSET = 16
ONNX_DEFAULT_OPSET = 17

ensure_detectron2_export()


class ExportError(ValueError):
    """A model, option or format that cannot be exported; the message says which and why."""


def check_format(fmt):
    """Raise ``ExportError`` unless ``fmt`` is one of ``EXPORT_FORMATS``."""
    if fmt not in EXPORT_FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose from {list(EXPORT_FORMATS)}")


def check_exportable(cfg, fmt, opset=ONNX_DEFAULT_OPSET):
    """Refuse the options that tracing cannot export, before any work is done.

    Args:
        cfg (CfgNode): the model's config.
        fmt (str): one of ``EXPORT_FORMATS``.
        opset (int): ONNX opset (``fmt == "onnx"`` only).

    Raises:
        ExportError: naming the option and the reason.
    """
    check_format(fmt)
    if cfg.TEST.AUG.ENABLED:
        raise ExportError(
            "TEST.AUG.ENABLED: test-time augmentation (GeneralizedRCNNWithTTA) runs several "
            "resized and flipped passes in Python and cannot be traced; export with "
            "TEST.AUG.ENABLED False"
        )
    if cfg.MODEL.META_ARCHITECTURE not in ("GeneralizedRCNN", "CTMaskNetClassifier"):
        raise ExportError(
            f"MODEL.META_ARCHITECTURE {cfg.MODEL.META_ARCHITECTURE!r}: only GeneralizedRCNN "
            "(the segmenter) and CTMaskNetClassifier can be exported"
        )
    if any(cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE):
        raise ExportError(
            "MODEL.RESNETS.DEFORM_ON_PER_STAGE: deformable convolution has no TorchScript or "
            "ONNX form here (it needs Detectron2's C++ extension)"
        )
    poolers = {
        "MODEL.ROI_BOX_HEAD.POOLER_TYPE": cfg.MODEL.ROI_BOX_HEAD.POOLER_TYPE,
        "MODEL.ROI_MASK_HEAD.POOLER_TYPE": cfg.MODEL.ROI_MASK_HEAD.POOLER_TYPE,
    }
    for key, kind in poolers.items():
        if kind not in ("ROIAlign", "ROIAlignV2"):
            raise ExportError(f"{key} {kind!r}: only ROIAlign and ROIAlignV2 can be exported")
        if fmt == "onnx" and kind == "ROIAlignV2" and opset < ONNX_MIN_OPSET:
            raise ExportError(
                f"{key} ROIAlignV2 (aligned RoIAlign) needs ONNX opset >= {ONNX_MIN_OPSET}, "
                f"got --opset {opset}"
            )


def export_graph(
    module,
    inputs,
    fmt,
    path,
    *,
    input_names,
    output_names,
    dynamic_axes,
    meta,
    opset=ONNX_DEFAULT_OPSET,
    overwrite=False,
):
    """Trace ``module(*inputs)`` and write it to ``path`` with a ``path + ".json"`` sidecar.

    Args:
        module (nn.Module): takes and returns tensors only (e.g. a ``TracingAdapter``).
        inputs (tuple[Tensor]): example inputs (traced as float32).
        fmt (str): "torchscript" or "onnx".
        path (str): output file; refused if it exists unless ``overwrite``.
        input_names, output_names (list[str]): names of the flat inputs and outputs.
        dynamic_axes (dict): ONNX ``dynamic_axes`` (axis names per input/output name).
        meta (dict): written into the sidecar beside format, names and opset.
        opset (int): ONNX opset.

    Returns:
        str: ``path``.
    """
    check_format(fmt)
    sidecar = path + ".json"
    refuse_existing((path, sidecar), overwrite)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    module.eval()
    inputs = tuple(x.float() for x in inputs)
    tmp = path + ".tmp"
    with torch.no_grad():
        if fmt == "torchscript":
            torch.jit.save(torch.jit.trace(module, inputs, check_trace=False), tmp)
        else:
            torch.onnx.export(
                module,
                inputs,
                tmp,
                opset_version=opset,
                input_names=list(input_names),
                output_names=list(output_names),
                dynamic_axes=dynamic_axes,
                dynamo=False,  # the TorchScript-based exporter: Detectron2 models are traced
            )
    # torch.onnx.export puts the module back in its mode from before the call
    module.eval()
    os.replace(tmp, path)
    info = {
        "format": fmt,
        "inputs": list(input_names),
        "outputs": list(output_names),
        "opset": opset if fmt == "onnx" else None,
        "torch": torch.__version__,
        **meta,
    }
    write_json_atomic(info, sidecar, overwrite=True)
    return path


class ExportedGraph:
    """A file written by :func:`export_graph`, run on tensors: TorchScript or ONNX Runtime.

    Calling it with the flat input tensors returns the named outputs as a dict of CPU tensors:
    both run on the CPU (the graphs are traced on the CPU; ONNX Runtime's CPU provider).
    """

    def __init__(self, path, num_threads=None):
        """
        Args:
            path (str): the ``.ts`` or ``.onnx`` file; its ``.json`` sidecar must be beside it.
            num_threads (int or None): ONNX Runtime intra-op threads (default
                ``torch.get_num_threads()``); TorchScript uses PyTorch's threads.
        """
        sidecar = path + ".json"
        for target in (path, sidecar):
            if not os.path.isfile(target):
                raise FileNotFoundError(f"{target}: not found (write it with tools/export.py)")
        with open(sidecar) as f:
            self.meta = json.load(f)
        self.path = path
        self.format = self.meta["format"]
        self.output_names = self.meta["outputs"]
        if self.format == "torchscript":
            self._module = torch.jit.load(path, map_location="cpu")
        elif self.format == "onnx":
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = num_threads or torch.get_num_threads()
            options.inter_op_num_threads = 1
            self._session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
            self._input_names = [i.name for i in self._session.get_inputs()]
        else:
            raise ExportError(f"{sidecar}: unknown format {self.format!r}")

    def __call__(self, *inputs):
        inputs = [x.float() for x in inputs]  # the graphs take float32 (see the module doc)
        if self.format == "torchscript":
            with torch.no_grad():
                outputs = self._module(*(x.cpu() for x in inputs))
            outputs = [outputs] if isinstance(outputs, torch.Tensor) else list(outputs)
        else:
            feed = {
                n: np.ascontiguousarray(x.detach().cpu().numpy())
                for n, x in zip(self._input_names, inputs)
            }
            outputs = [torch.from_numpy(o) for o in self._session.run(None, feed)]
        return dict(zip(self.output_names, outputs))


def max_abs_difference(reference, candidate):
    """Largest absolute difference of two same-shaped tensors (0 for empty ones).

    Returns:
        float: ``inf`` when the shapes differ.
    """
    if reference.shape != candidate.shape:
        return float("inf")
    if reference.numel() == 0:
        return 0.0
    return (reference.double() - candidate.double()).abs().max().item()
