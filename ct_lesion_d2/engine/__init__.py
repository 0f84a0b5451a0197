from .predictor import CTLesionPredictor, SlicePrediction, build_predict_config
from .trainer import CTLesionTrainer, resolve_device

__all__ = [
    "CTLesionPredictor",
    "CTLesionTrainer",
    "SlicePrediction",
    "build_predict_config",
    "resolve_device",
]
