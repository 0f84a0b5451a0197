"""Scan-level reports (JSON and HTML) built from slice predictions."""

from .html_report import png_bytes, render_scan_html
from .lesions import LesionTable, find_lesions, slice_spacing_mm, union_mask
from .scan_report import AGGREGATION_RULES, SCHEMA, aggregate_classes, build_scan_report

__all__ = [
    "AGGREGATION_RULES",
    "LesionTable",
    "SCHEMA",
    "aggregate_classes",
    "build_scan_report",
    "find_lesions",
    "png_bytes",
    "render_scan_html",
    "slice_spacing_mm",
    "union_mask",
]
