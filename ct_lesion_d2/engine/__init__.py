from .predictor import CTLesionPredictor, SlicePrediction, build_predict_config
from .trainer import CTLesionTrainer, is_classifier, match_num_classes, resolve_device

__all__ = [
    "CTLesionPredictor",
    "CTLesionTrainer",
    "SlicePrediction",
    "build_predict_config",
    "is_classifier",
    "match_num_classes",
    "resolve_device",
]
