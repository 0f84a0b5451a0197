"""Deployment of the trained models: CPU inference optimisations and TorchScript/ONNX export.

Importing this package also makes ``detectron2.export`` importable where caffe2 is absent
(``compat.py``), which ``TracingAdapter`` and fvcore flop counting need.
"""

from ..modeling.gather_roi_align import GatherROIAlign, gather_roi_align
from .classification import (
    CLASSIFIER_TOLERANCES,
    ExportedClassifier,
    classifier_candidates,
    compare_classification,
    export_classifier,
)
from .compat import ensure_detectron2_export
from .optimize import fold_batch_norm, gather_roi_poolers, optimize_for_inference
from .segmentation import (
    SEGMENTATION_TOLERANCES,
    ExportedSegmenter,
    compare_segmentation,
    export_segmenter,
    segmentation_adapter,
)
from .tracing import EXPORT_FORMATS, ExportedGraph, ExportError, check_exportable

__all__ = [
    "CLASSIFIER_TOLERANCES",
    "EXPORT_FORMATS",
    "ExportError",
    "ExportedClassifier",
    "ExportedGraph",
    "ExportedSegmenter",
    "GatherROIAlign",
    "SEGMENTATION_TOLERANCES",
    "check_exportable",
    "classifier_candidates",
    "compare_classification",
    "compare_segmentation",
    "ensure_detectron2_export",
    "export_classifier",
    "export_segmenter",
    "fold_batch_norm",
    "gather_roi_align",
    "gather_roi_poolers",
    "optimize_for_inference",
    "segmentation_adapter",
]
