"""Scan-level reports (JSON and HTML) built from slice predictions."""

from .html_report import png_bytes, render_scan_html
from .scan_report import AGGREGATION_RULES, SCHEMA, aggregate_classes, build_scan_report

__all__ = [
    "AGGREGATION_RULES",
    "SCHEMA",
    "aggregate_classes",
    "build_scan_report",
    "png_bytes",
    "render_scan_html",
]
