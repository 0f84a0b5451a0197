"""Evaluators: slice classification metrics, and lesion Dice and detection rates beside
Detectron2's COCOEvaluator."""

from .classification_evaluation import (
    CTClassificationEvaluator,
    binary_auc,
    classification_metrics,
    confusion_matrix,
    plot_confusion_matrix,
)
from .lesion_evaluation import (
    CTLesionEvaluator,
    annotation_rles,
    build_lesion_evaluators,
    connected_instances,
    encode_masks,
    lesion_metrics,
    slice_lesion_counts,
    write_lesion_results,
)

__all__ = [
    "CTClassificationEvaluator",
    "CTLesionEvaluator",
    "annotation_rles",
    "binary_auc",
    "build_lesion_evaluators",
    "classification_metrics",
    "confusion_matrix",
    "connected_instances",
    "encode_masks",
    "lesion_metrics",
    "plot_confusion_matrix",
    "slice_lesion_counts",
    "write_lesion_results",
]
