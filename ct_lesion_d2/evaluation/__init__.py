"""Evaluators: slice classification metrics (lesions use Detectron2's COCOEvaluator)."""
from .classification_evaluation import (
    CTClassificationEvaluator,
    binary_auc,
    classification_metrics,
    confusion_matrix,
    plot_confusion_matrix,
)

__all__ = [
    "CTClassificationEvaluator",
    "binary_auc",
    "classification_metrics",
    "confusion_matrix",
    "plot_confusion_matrix",
]
