"""Evaluators: slice classification metrics (and the operating point chosen on a validation
split), and lesion Dice and detection rates beside Detectron2's COCOEvaluator."""

from .classification_evaluation import (
    CTClassificationEvaluator,
    binary_auc,
    classification_metrics,
    confusion_matrix,
    plot_confusion_matrix,
    plot_roc_curve,
    roc_curve,
    youden_threshold,
)
from .ensemble import average_predictions, evaluate_ensemble
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
from .operating_point import load_predictions, metrics_at_threshold, validation_operating_point

__all__ = [
    "average_predictions",
    "evaluate_ensemble",
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
    "load_predictions",
    "metrics_at_threshold",
    "plot_confusion_matrix",
    "plot_roc_curve",
    "roc_curve",
    "slice_lesion_counts",
    "validation_operating_point",
    "write_lesion_results",
    "youden_threshold",
]
