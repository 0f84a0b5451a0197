from .trainer import CTLesionTrainer, is_classifier, match_num_classes, resolve_device

__all__ = ["CTLesionTrainer", "is_classifier", "match_num_classes", "resolve_device"]
