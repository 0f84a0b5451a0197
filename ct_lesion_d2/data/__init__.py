from . import datasets  # noqa: F401  (registers the built-in datasets)
from .classification import (
    list_class_folders,
    parse_covidx_split,
    sample_per_class,
    split_records_by_group,
)
from .io import DatasetFormatError
from .mappers import ClassificationDatasetMapper

__all__ = [
    "ClassificationDatasetMapper",
    "DatasetFormatError",
    "list_class_folders",
    "parse_covidx_split",
    "sample_per_class",
    "split_records_by_group",
]
