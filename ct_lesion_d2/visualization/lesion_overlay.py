"""The report's lesion picture, drawn with Detectron2's ``Visualizer``.

One slice with its lesions (connected regions of the union of the predicted masks, as counted
by :mod:`ct_lesion_d2.analysis.lesions`) drawn semi-transparent in one colour scale, the lesion
score through :data:`LESION_CMAP`, each labelled with its lesion id; orientation letters on the
four sides where the input gives the orientation, a scale bar where it gives the pixel spacing,
and a line saying what is unknown otherwise.
"""

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np
from detectron2.utils.visualizer import Visualizer
from matplotlib import colormaps
from matplotlib import patheffects as pe
from matplotlib.colors import Normalize
from matplotlib.lines import Line2D

from .overlay import panel_scale

__all__ = [
    "LESION_CMAP",
    "SliceView",
    "draw_lesion_overlay",
    "lesion_colour",
    "lesion_norm",
    "orientation_letters",
    "scale_bar_length_mm",
    "scale_bar_pixels",
    "slice_view",
]

# One colour scale for every lesion: its score, from the report's threshold (dark red) to 1.
LESION_CMAP = "autumn"
# Fill opacity: the lung texture under a lesion stays visible.
LESION_ALPHA = 0.45
# A direction component at least this large (cosine) is named, so oblique sides read "RA".
_OBLIQUE_COMPONENT = 0.3
_SCALE_BAR_CHOICES_MM = (100, 50, 20, 10, 5, 2, 1)
# matplotlib draws text sizes in points; the Visualizer's figure has the default 100 dpi.
_POINTS_TO_PX = 100 / 72


@dataclass
class SliceView:
    """How a slice lies in the patient, as far as the input says.

    Attributes:
        sides (dict[str, str] or None): the patient direction at the image's ``left``,
            ``right``, ``top`` and ``bottom`` edges (``R``, ``L``, ``A``, ``P``, ``S``, ``I``,
            two letters for an oblique side); None when the orientation is unknown.
        spacing_mm (tuple[float, float] or None): (row, column) pixel spacing.
    """

    sides: Optional[Dict[str, str]] = None
    spacing_mm: Optional[Tuple[float, float]] = None

    @property
    def note(self):
        """str: what is not drawn and why ("" when both orientation and scale are known)."""
        if self.sides is None and self.spacing_mm is None:
            return "geometry unknown: no orientation, no scale"
        if self.sides is None:
            return "orientation unknown"
        if self.spacing_mm is None:
            return "scale unknown"
        return ""


def _direction_letters(vector):
    vector = np.asarray(vector, dtype=np.float64)[:3]
    vector = vector / np.linalg.norm(vector)
    order = np.argsort(-np.abs(vector), kind="stable")
    return "".join(
        ("RAS" if vector[i] > 0 else "LPI")[i]
        for i in order[:2]
        if abs(vector[i]) >= _OBLIQUE_COMPONENT or i == order[0]
    )


def orientation_letters(column_direction, row_direction):
    """The patient directions at the four sides of an image.

    Args:
        column_direction (Sequence[float]): RAS+ direction in which the column index grows
            (left to right on screen), e.g. the first column of a NIfTI-style affine.
        row_direction (Sequence[float]): RAS+ direction in which the row index grows (top to
            bottom on screen).

    Returns:
        dict[str, str]: ``left``, ``right``, ``top``, ``bottom`` -> letters. A standard axial
        slice in the radiological view gives R, L, A, P.
    """
    column, row = np.asarray(column_direction, float), np.asarray(row_direction, float)
    return {
        "left": _direction_letters(-column),
        "right": _direction_letters(column),
        "top": _direction_letters(-row),
        "bottom": _direction_letters(row),
    }


def slice_view(geometry, spacing_mm):
    """The :class:`SliceView` of a scan's slices.

    Args:
        geometry (ScanGeometry): from :func:`ct_lesion_d2.data.readers.geometry.scan_geometry`;
            its affine maps (column, row, slice) to RAS+ mm, ``known`` says whether the input
            gave position and orientation.
        spacing_mm (tuple[float, float] or None): the scan's (row, column) spacing.

    Returns:
        SliceView
    """
    sides = None
    if geometry is not None and geometry.known:
        sides = orientation_letters(geometry.affine[:3, 0], geometry.affine[:3, 1])
    return SliceView(sides, tuple(float(v) for v in spacing_mm) if spacing_mm else None)


def scale_bar_length_mm(width_px, column_spacing_mm):
    """The longest of 10, 5, 2, 1 cm, 5, 2, 1 mm that spans at most a quarter of the width."""
    width_mm = width_px * column_spacing_mm
    return next((n for n in _SCALE_BAR_CHOICES_MM if n <= width_mm / 4), 1)


def scale_bar_pixels(length_mm, column_spacing_mm):
    """Length in image pixels (columns) of a horizontal bar of ``length_mm``."""
    return length_mm / column_spacing_mm


def lesion_norm(score_threshold):
    """The colour scale's range: from the score threshold (nothing below it is drawn) to 1."""
    return Normalize(vmin=min(float(score_threshold), 0.99), vmax=1.0, clip=True)


def lesion_colour(score, score_threshold):
    """RGB (0-1) of a lesion of ``score`` in the one colour scale of the picture."""
    return tuple(colormaps[LESION_CMAP](lesion_norm(score_threshold)(score))[:3])


def _base_font_size(size, scale):
    """The Visualizer's default text size (points) for a slice of ``size`` drawn at ``scale``."""
    return max(np.sqrt(size[0] * size[1]) // 90, 10 // scale)


def _text_box(position, text, font_px, align):
    x, y = position
    width, height = 0.65 * font_px * len(text) + 4, 1.3 * font_px + 4
    x0 = x - width / 2 if align == "center" else x
    return (x0, y, x0 + width, y + height)


def _overlaps(a, b):
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _label_position(region, text, placed, font_px, size):
    """Beside the region's box (above, below, right): the first place inside the image that
    leaves the labels already placed free; else above, moved into the image."""
    ys, xs = np.nonzero(region)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    height, width = size
    gap, text_h = 2, 1.3 * font_px + 4
    candidates = [
        ((x0 + x1) / 2, y0 - gap - text_h, "center"),
        ((x0 + x1) / 2, y1 + gap, "center"),
        (x1 + gap, (y0 + y1 - text_h) / 2, "left"),
    ]
    for x, y, align in candidates:
        box = _text_box((x, y), text, font_px, align)
        inside = box[0] >= 0 and box[1] >= 0 and box[2] <= width and box[3] <= height
        if inside and not any(_overlaps(box, b) for b in placed):
            return (x, y), align, box
    x, y, align = candidates[0]
    y = max(0.0, y)
    return (x, y), align, _text_box((x, y), text, font_px, align)


def _draw_scale_bar(vis, view, size, font_size):
    height, width = size
    length_mm = scale_bar_length_mm(width, view.spacing_mm[1])
    length_px = scale_bar_pixels(length_mm, view.spacing_mm[1])
    margin = 0.04 * width
    x1, y = width - margin, height - margin
    thickness_pt = max(2.0, height / 100) * vis.output.scale / _POINTS_TO_PX
    vis.output.ax.add_line(
        Line2D(
            [x1 - length_px, x1],
            [y, y],
            linewidth=thickness_pt,
            color="white",
            solid_capstyle="butt",
            path_effects=[pe.withStroke(linewidth=thickness_pt + 2, foreground="black")],
        )
    )
    label = f"{length_mm // 10} cm" if length_mm >= 10 else f"{length_mm} mm"
    text_y = y - max(2.0, height / 100) - 1.3 * font_size * _POINTS_TO_PX - 4
    vis.draw_text(label, (x1 - length_px / 2, text_y), font_size=font_size, color="white")


def _draw_sides(vis, sides, size, font_size):
    height, width = size
    font_px = font_size * _POINTS_TO_PX
    inset = 0.015 * width
    places = {
        "left": ((inset, height / 2 - font_px / 2), "left"),
        "right": ((width - inset, height / 2 - font_px / 2), "right"),
        "top": ((width / 2, inset), "center"),
        "bottom": ((width / 2, height - inset - 1.4 * font_px), "center"),
    }
    for side, (position, align) in places.items():
        vis.draw_text(
            sides[side],
            position,
            font_size=font_size,
            color="white",
            horizontal_alignment=align,
        )


def draw_lesion_overlay(
    grey, labels, lesion_scores, score_threshold, view=None, scale=None, alpha=LESION_ALPHA
):
    """The slice with its lesions in one colour scale, lesion ids, orientation and scale.

    Args:
        grey (np.ndarray): (H, W) uint8 slice as displayed, or (H, W, 3) RGB.
        labels (np.ndarray): (H, W) integer lesion ids of the slice (0 = background), the ids
            of the report's lesion table.
        lesion_scores (dict[int, float]): lesion id -> score (colours the lesion).
        score_threshold (float): the lowest score drawn; the bottom of the colour scale.
        view (SliceView or None): orientation letters and spacing; None = unknown.
        scale (float or None): output size over input size; None enlarges small slices
            (:func:`ct_lesion_d2.visualization.overlay.panel_scale`).
        alpha (float): fill opacity of the lesions.

    Returns:
        np.ndarray: RGB uint8 image of the slice's size times ``scale``.
    """
    view = view or SliceView()
    rgb = grey if grey.ndim == 3 else np.repeat(grey[:, :, None], 3, axis=2)
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    scale = scale or panel_scale(rgb)
    vis = Visualizer(rgb, None, scale=scale)
    size = rgb.shape[:2]
    font = _base_font_size(size, scale)
    id_font = font * 1.5
    placed = []
    for lesion_id in (int(v) for v in np.unique(labels) if v):
        region = labels == lesion_id
        score = lesion_scores.get(lesion_id)
        colour = lesion_colour(score_threshold if score is None else score, score_threshold)
        vis.draw_binary_mask(region, color=colour, edge_color=colour, alpha=alpha, area_threshold=0)
        text = str(lesion_id)
        position, align, box = _label_position(region, text, placed, id_font * _POINTS_TO_PX, size)
        placed.append(box)
        vis.draw_text(
            text,
            position,
            font_size=id_font,
            color="white",
            horizontal_alignment=align,
        )
    side_font = font * 1.8
    if view.sides is not None:
        _draw_sides(vis, view.sides, size, side_font)
    if view.spacing_mm is not None:
        _draw_scale_bar(vis, view, size, font * 1.4)
    if view.note:
        vis.draw_text(
            view.note,
            (0.015 * size[1], size[0] - 0.015 * size[1] - 1.4 * side_font * _POINTS_TO_PX),
            font_size=font * 1.3,
            color="white",
            horizontal_alignment="left",
        )
    return vis.output.get_image()
