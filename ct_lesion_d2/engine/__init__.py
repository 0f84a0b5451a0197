from ..config import resolve_device
from .checkpoint import AtomicDetectionCheckpointer, IncompleteCheckpointError
from .hooks import NonFiniteLossError, WeightAverage
from .predictor import CTLesionPredictor, SlicePrediction, build_predict_config
from .trainer import (
    CTLesionTrainer,
    is_classifier,
    match_num_classes,
)

__all__ = [
    "AtomicDetectionCheckpointer",
    "CTLesionPredictor",
    "CTLesionTrainer",
    "IncompleteCheckpointError",
    "NonFiniteLossError",
    "SlicePrediction",
    "WeightAverage",
    "build_predict_config",
    "is_classifier",
    "match_num_classes",
    "resolve_device",
]
