from .checkpoint import AtomicDetectionCheckpointer, IncompleteCheckpointError
from .trainer import CTLesionTrainer, NonFiniteLossError, resolve_device

__all__ = [
    "AtomicDetectionCheckpointer",
    "CTLesionTrainer",
    "IncompleteCheckpointError",
    "NonFiniteLossError",
    "resolve_device",
]
