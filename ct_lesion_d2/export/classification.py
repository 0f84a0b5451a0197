"""Export the COVID-CT-Mask-Net classifier: two traced graphs and the RoI ranking in Python.

Tracing records one path through the code. The ranked RoI batch (``roi_batch.py``) is
data-dependent in a way a trace cannot keep: how many candidates survive the NMS decides
whether and how often rows are replicated to fill B, and a traced graph would replay the
replication of its example image on every image. So the classifier is exported where tracing
is exact and the rest stays Python:

1. ``<name>_detector``: image -> per-proposal class scores, decoded boxes and raw deltas
   (backbone, RPN, RoI box head; through Detectron2's ``TracingAdapter``);
2. ``build_roi_batch`` in Python (the same function as the eager model);
3. ``<name>_s``: module S, the flattened B x 5 batch -> class logits.

With ``MODEL.CT_CLASSIFIER.ROI_HEAD_FEATURES`` the detector graph also returns the box head's
features, appended to the rows in Python. The slice-feature options are refused by name
(:func:`check_classifier_exportable`): the lesion burden pastes masks and thresholds the slice
in Python, the global average covers the unpadded cells only, and the image branch is a third
network on a resized slice, none of which this two-graph split carries yet.

:class:`ExportedClassifier` chains them and returns what ``CTMaskNetClassifier`` returns.
"""

import copy

import torch
from detectron2.export import TracingAdapter
from detectron2.structures import Boxes

from ..modeling.detect import detect
from ..modeling.meta_arch.covid_ct_mask_net import CTMaskNetClassifier, roi_candidates
from ..modeling.meta_arch.roi_batch import build_roi_batch
from ..utils.files import refuse_existing
from .optimize import fold_batch_norm
from .tracing import (
    EXPORT_FORMATS,
    ONNX_DEFAULT_OPSET,
    ExportedGraph,
    ExportError,
    check_format,
    export_graph,
    max_abs_difference,
)

__all__ = [
    "CLASSIFIER_TOLERANCES",
    "ExportedClassifier",
    "check_classifier_exportable",
    "classifier_candidates",
    "compare_classification",
    "export_classifier",
    "exported_classifier_files",
]

# Largest differences accepted between the eager and the exported classifier.
CLASSIFIER_TOLERANCES = {"class_probs": 1e-4, "roi_scores": 1e-4, "roi_boxes": 0.05}
_CANDIDATES = ("scores", "boxes", "deltas")


def classifier_candidates(model, inputs):
    """Every (RoI, foreground class) candidate of one image, before ranking.

    The model's own ``roi_candidates`` over its detector pass (:func:`detect`): what
    ``CTMaskNetClassifier.roi_batches`` computes before ``build_roi_batch``, as a function of
    the model so that it can be traced.

    Args:
        model (CTMaskNetClassifier): in eval mode.
        inputs (list[dict]): one image dict with ``"image"``.

    Returns:
        tuple[Tensor]: scores (R, K), decoded boxes (R, K, 4), raw deltas (R, K, 4), and the
        box head's features (R, FC_DIM) with ``ROI_HEAD_FEATURES``.
    """
    _, features, proposals, _ = detect(model, inputs, roi_heads=False)
    return roi_candidates(
        model.roi_heads,
        features,
        proposals,
        model.sigmoid_scores,
        head_features=model.roi_head_features,
    )


def check_classifier_exportable(model):
    """Refuse the classifier options the export does not carry, naming their config key.

    Raises:
        ExportError: ``LESION_BURDEN_FEATURES``, ``GLOBAL_FEATURES`` or ``IMAGE_BRANCH`` is on.
    """
    refused = {
        "LESION_BURDEN_FEATURES": model.burden_score_thresh is not None,
        "GLOBAL_FEATURES": model.global_features,
        "IMAGE_BRANCH": model.image_branch is not None,
    }
    for key, on in refused.items():
        if on:
            raise ExportError(
                f"MODEL.CT_CLASSIFIER.{key} cannot be exported: its slice features are "
                "computed outside the traced detector graph; export a classifier without it"
            )


def export_classifier(
    model, image, fmt, prefix, *, opset=ONNX_DEFAULT_OPSET, fold_bn=True, overwrite=False, meta=None
):
    """Write the classifier as ``<prefix>_detector`` and ``<prefix>_s`` TorchScript/ONNX files.

    Args:
        model (CTMaskNetClassifier): in eval mode; a copy is exported.
        image (Tensor): (3, H, W) example input.
        fmt (str): "torchscript" or "onnx".
        prefix (str): path prefix, e.g. ``exported/classifier``.
        opset, fold_bn, overwrite, meta: as for ``export_segmenter``.

    Returns:
        (str, str): the detector and the module S files.
    """
    check_format(fmt)
    if not hasattr(model, "batch_options"):
        raise ExportError(f"{type(model).__name__} is not a CTMaskNetClassifier")
    check_classifier_exportable(model)
    names = list(_CANDIDATES) + (["head_features"] if model.roi_head_features else [])
    refuse_existing(exported_classifier_files(prefix, fmt), overwrite)  # before tracing
    model = copy.deepcopy(model).eval()
    if fold_bn:
        fold_batch_norm(model)
    ext = EXPORT_FORMATS[fmt]
    shared = {"fold_bn": fold_bn, **(meta or {})}
    adapter = TracingAdapter(model, [{"image": image}], classifier_candidates).eval()
    detector = export_graph(
        adapter,
        (image,),
        fmt,
        f"{prefix}_detector{ext}",
        input_names=["image"],
        output_names=names,
        dynamic_axes={"image": {1: "height", 2: "width"}, **{n: {0: "r"} for n in names}},
        meta={
            "kind": "classifier_detector",
            "batch_options": model.batch_options,
            "roi_head_features": model.roi_head_features,
            "decision_threshold": model.decision_threshold,
            **shared,
        },
        opset=opset,
        overwrite=overwrite,
    )
    batch_size = model.batch_options["batch_size"]
    s_module = export_graph(
        model.classifier,
        (torch.zeros(1, model.classifier[0].in_features),),
        fmt,
        f"{prefix}_s{ext}",
        input_names=["rows"],
        output_names=["class_logits"],
        dynamic_axes={"rows": {0: "n"}, "class_logits": {0: "n"}},
        meta={"kind": "classifier_s", "batch_size": batch_size, **shared},
        opset=opset,
        overwrite=overwrite,
    )
    return detector, s_module


class ExportedClassifier:
    """An exported classifier with the eager model's calling convention (eval mode).

    ``classifier(batched_inputs)`` returns per image ``class_logits``, ``class_probs``,
    ``pred_class``, ``roi_boxes`` (``Boxes`` rescaled to ``height`` x ``width``),
    ``roi_scores`` and ``roi_num_detections``, as ``CTMaskNetClassifier`` does.
    """

    def __init__(self, prefix, fmt, num_threads=None):
        """
        Args:
            prefix (str): the prefix given to :func:`export_classifier`.
            fmt (str): "torchscript" or "onnx".
            num_threads (int or None): ONNX Runtime threads (default: PyTorch's).
        """
        check_format(fmt)
        ext = EXPORT_FORMATS[fmt]
        self.detector = ExportedGraph(f"{prefix}_detector{ext}", num_threads)
        self.s_module = ExportedGraph(f"{prefix}_s{ext}", num_threads)
        expected = ((self.detector, "classifier_detector"), (self.s_module, "classifier_s"))
        for graph, kind in expected:
            if graph.meta.get("kind") != kind:
                raise ExportError(f"{graph.path}: not a {kind} export")
        self.batch_options = self.detector.meta["batch_options"]
        self.roi_head_features = self.detector.meta.get("roi_head_features", False)
        self.decision_threshold = self.detector.meta.get("decision_threshold")

    def __call__(self, batched_inputs):
        results = []
        for inputs in batched_inputs:
            image = inputs["image"]
            height, width = image.shape[-2:]
            candidates = self.detector(image)
            head = candidates["head_features"] if self.roi_head_features else None
            batch = build_roi_batch(
                *(candidates[n] for n in _CANDIDATES), (height, width), head, **self.batch_options
            )
            logits = self.s_module(batch.rows.reshape(1, -1))["class_logits"][0]
            outputs = CTMaskNetClassifier.image_outputs(
                logits, batch, inputs, (height, width), self.decision_threshold
            )
            results.append(outputs)
        return results


def compare_classification(reference, candidate, tolerances=None):
    """Compare one image's eager and exported classifier outputs.

    Returns:
        dict: ``max_abs_diff`` per compared output, ``same_class`` and ``ok``.
    """
    tolerances = CLASSIFIER_TOLERANCES if tolerances is None else tolerances
    diffs = {}
    for name in tolerances:
        ref, got = reference[name], candidate[name]
        ref, got = (x.tensor if isinstance(x, Boxes) else x for x in (ref, got))
        diffs[name] = max_abs_difference(ref, got)
    same_class = int(reference["pred_class"]) == int(candidate["pred_class"])
    ok = same_class and all(diffs[n] <= tolerances[n] for n in tolerances)
    return {"max_abs_diff": diffs, "same_class": same_class, "ok": ok}


def exported_classifier_files(prefix, fmt):
    """The files :func:`export_classifier` writes for ``prefix`` and ``fmt`` (with sidecars)."""
    ext = EXPORT_FORMATS[fmt]
    graphs = [f"{prefix}_detector{ext}", f"{prefix}_s{ext}"]
    return graphs + [g + ".json" for g in graphs]
