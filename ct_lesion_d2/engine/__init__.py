from .trainer import CTLesionTrainer, resolve_device

__all__ = ["CTLesionTrainer", "resolve_device"]
