from . import datasets  # noqa: F401  (registers the built-in datasets)
from .io import DatasetFormatError

__all__ = ["DatasetFormatError"]
