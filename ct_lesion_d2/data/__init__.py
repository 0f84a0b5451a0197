from . import datasets  # noqa: F401  (registers the built-in datasets)
from .classification import (
    list_class_folders,
    parse_covidx_split,
    sample_per_class,
)
from .io import DatasetFormatError
from .mappers import ClassificationDatasetMapper, CTLesionDatasetMapper
from .readers import Scan, read_scan
from .splits import split_records_by_group
from .transforms import apply_ct_window

__all__ = [
    "CTLesionDatasetMapper",
    "ClassificationDatasetMapper",
    "DatasetFormatError",
    "Scan",
    "list_class_folders",
    "apply_ct_window",
    "parse_covidx_split",
    "read_scan",
    "sample_per_class",
    "split_records_by_group",
]
