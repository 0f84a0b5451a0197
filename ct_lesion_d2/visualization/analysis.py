"""The paper's analysis figures (docs/PAPER.md, section 5: Figures 2 and 3), one slice at a time.

- :func:`draw_analysis_panel`: the slice with its lesions in one colour scale, labelled by
  lesion id, with orientation letters and a scale bar where known
  (:mod:`~ct_lesion_d2.visualization.lesion_overlay`, Detectron2's ``Visualizer``), the mask
  probability map at the same size, the ground truth when known, and the classifier's class
  scores.
- :func:`draw_roi_statistics`: histogram of the RoI confidences and scatter of RoI box area
  against confidence, for the top 16 RoIs and for the whole ranked batch.

Figures are drawn with matplotlib's object API on an Agg canvas (no pyplot state) and returned
as RGB uint8 arrays.
"""

import os

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.figure import Figure
from torch.nn import functional as F

from ..data.datasets.metadata import lesion_metadata
from .lesion_overlay import LESION_CMAP, draw_lesion_overlay, lesion_norm
from .overlay import draw_ground_truth

__all__ = [
    "analysis_figure",
    "combined_mask_logits",
    "draw_analysis_panel",
    "draw_roi_statistics",
    "figure_to_array",
    "lesion_metadata",
    "mask_probability_map",
    "save_slice_figures",
    "slice_lesions",
]

# RoIs shown in the "top" half of the RoI statistics (the paper's 16).
TOP_ROIS = 16
# The mask probability's colour scale (another quantity than the lesion score: another map).
PROBABILITY_CMAP = "viridis"


def combined_mask_logits(mask_logits, boxes, image_size):
    """Paste each RoI's raw mask logits into its box and keep the largest value per pixel.

    The 28 x 28 logits (before the sigmoid) are resampled bilinearly over the box, with the
    pixel-centre convention of Detectron2's ``paste_masks_in_image``; pixels in no box are NaN.

    Args:
        mask_logits (Tensor): (N, M, M) logits of the predicted class of each RoI.
        boxes (Tensor): (N, 4) XYXY boxes in the image.
        image_size (tuple[int, int]): (height, width).

    Returns:
        np.ndarray: (height, width) float32.
    """
    height, width = image_size
    combined = torch.full((height, width), float("nan"))
    for logits, box in zip(mask_logits.float().cpu(), boxes.float().cpu()):
        x0, y0, x1, y1 = box.tolist()
        if x1 <= x0 or y1 <= y0:
            continue
        xs = torch.arange(max(0, int(np.floor(x0))), min(width, int(np.ceil(x1)))) + 0.5
        ys = torch.arange(max(0, int(np.floor(y0))), min(height, int(np.ceil(y1)))) + 0.5
        xs, ys = xs[(xs >= x0) & (xs <= x1)], ys[(ys >= y0) & (ys <= y1)]
        if not len(xs) or not len(ys):
            continue
        gx = (xs - x0) / (x1 - x0) * 2 - 1
        gy = (ys - y0) / (y1 - y0) * 2 - 1
        grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1)[None]
        pasted = F.grid_sample(
            logits[None, None], grid, align_corners=False, padding_mode="border"
        )[0, 0]
        rows = slice(int(ys[0] - 0.5), int(ys[-1] - 0.5) + 1)
        cols = slice(int(xs[0] - 0.5), int(xs[-1] - 0.5) + 1)
        combined[rows, cols] = torch.fmax(combined[rows, cols], pasted)
    return combined.numpy()


def figure_to_array(fig):
    """RGB uint8 array of a matplotlib ``Figure`` drawn on an Agg canvas."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _show(ax, image, title):
    ax.imshow(image)
    ax.set_title(title, fontsize=10)
    ax.set_axis_off()


def _message(ax, title, text):
    ax.set_title(title, fontsize=10)
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=9, transform=ax.transAxes)
    ax.set_axis_off()


def mask_probability_map(mask_logits, boxes, image_size):
    """The mask probability of :func:`combined_mask_logits`: the sigmoid of the largest logit
    over the RoIs, in [0, 1], NaN in no box.

    Args:
        mask_logits, boxes, image_size: see :func:`combined_mask_logits`.

    Returns:
        np.ndarray: (height, width) float32.
    """
    logits = combined_mask_logits(mask_logits, boxes, image_size)
    with np.errstate(over="ignore"):
        return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)


def slice_lesions(instances, score_threshold=0.0):
    """Lesion ids and scores of one slice on its own (no lesion table of a scan at hand).

    Args:
        instances (Instances): ``pred_masks`` and ``scores`` on the CPU.
        score_threshold (float): instances scoring below it are ignored.

    Returns:
        tuple[np.ndarray, dict[int, float]]: (H, W) lesion ids (connected regions of the union
        mask, :func:`ct_lesion_d2.analysis.find_lesions`) and id -> highest instance score.
    """
    from ..analysis.lesions import find_lesions

    table = find_lesions([instances], score_threshold=score_threshold)
    return table.labels[0], {x["id"]: x["max_score"] for x in table.lesions}


def _image_colorbar(fig, ax, mappable, label):
    """A colour bar beside ``ax`` that leaves the image axes their size."""
    bar = fig.colorbar(mappable, cax=ax.inset_axes([1.03, 0.0, 0.05, 1.0]))
    bar.set_label(label, fontsize=9)
    bar.ax.tick_params(labelsize=8)
    return bar


def _draw_lesions(fig, ax, grey, instances, lesions, score_threshold, view):
    labels, scores = lesions if lesions is not None else slice_lesions(instances, score_threshold)
    ax.imshow(draw_lesion_overlay(grey, labels, scores, score_threshold, view))
    count = len([v for v in np.unique(labels) if v])
    ax.set_title(f"prediction: {count} lesions ({len(instances)} detected instances)", fontsize=10)
    ax.set_axis_off()
    norm = lesion_norm(score_threshold)
    bar = _image_colorbar(
        fig, ax, ScalarMappable(norm, LESION_CMAP), "lesion score (highest instance confidence)"
    )
    bar.set_ticks(np.unique(np.round([norm.vmin, (norm.vmin + 1) / 2, 1.0], 2)))
    ax.text(
        0.0,
        -0.02,
        f"lesions drawn: score \u2265 {score_threshold:.2f}; numbers: lesion ids",
        transform=ax.transAxes,
        ha="left",
        va="top",
        fontsize=8,
    )


def _draw_probability(fig, ax, grey, instances, mask_threshold):
    probability = mask_probability_map(
        instances.pred_mask_logits, instances.pred_boxes.tensor, grey.shape
    )
    ax.imshow(grey, cmap="gray", vmin=0, vmax=255)
    ax.set_axis_off()
    if not np.isfinite(probability).any():
        ax.set_title("mask probability\nno detection above the threshold", fontsize=10)
        return
    im = ax.imshow(probability, cmap=PROBABILITY_CMAP, vmin=0.0, vmax=1.0, alpha=0.8)
    if np.nanmax(probability) > mask_threshold > np.nanmin(probability):
        ax.contour(np.nan_to_num(probability), [mask_threshold], colors="white", linewidths=0.8)
    bar = _image_colorbar(fig, ax, im, "mask probability (sigmoid)")
    bar.ax.axhline(mask_threshold, color="white", linewidth=1.5)
    ax.set_title("mask probability (max over instances)", fontsize=10)
    ax.text(
        0.0,
        -0.02,
        f"white line: mask threshold {mask_threshold:.2f}; blank: outside every box",
        transform=ax.transAxes,
        ha="left",
        va="top",
        fontsize=8,
    )


def analysis_figure(
    grey,
    prediction,
    metadata,
    class_names=None,
    record=None,
    score_threshold=0.0,
    title=None,
    *,
    lesions=None,
    view=None,
    mask_threshold=0.5,
):
    """The matplotlib ``Figure`` of :func:`draw_analysis_panel` (its axes: the prediction, the
    mask probability, the ground truth, the classifier, then the two colour bars)."""
    instances = prediction.instances
    # the placeholder columns (no ground truth, no classifier) are narrower
    ratios = [
        1.2,
        1.2,
        1 if record is not None else 0.35,
        0.9 if prediction.class_probs is not None else 0.35,
    ]
    fig = Figure(figsize=(4 * sum(ratios), 4.8), dpi=120)
    axes = fig.subplots(1, 4, gridspec_kw={"width_ratios": ratios})
    _draw_lesions(fig, axes[0], grey, instances, lesions, score_threshold, view)
    _draw_probability(fig, axes[1], grey, instances, mask_threshold)
    if record is not None:
        rgb = np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
        _show(
            axes[2],
            draw_ground_truth(rgb, record, metadata),
            f"ground truth ({len(record.get('annotations', []))} lesions)",
        )
    else:
        _message(axes[2], "ground truth", "not known for this slice")

    if prediction.class_probs is not None:
        probs = prediction.class_probs.float().numpy()
        names = class_names or [f"class {i}" for i in range(len(probs))]
        colours = ["#bbbbbb"] * len(probs)
        colours[int(probs.argmax())] = "#d62728"
        axes[3].barh(range(len(probs)), probs, color=colours)
        axes[3].set_yticks(range(len(probs)))
        axes[3].set_yticklabels(names, fontsize=9)
        axes[3].invert_yaxis()
        axes[3].set_xlim(0, 1)
        axes[3].set_xlabel("class score (sigmoid)")
        for i, p in enumerate(probs):
            axes[3].text(min(p + 0.02, 0.8), i, f"{p:.3f}", va="center", fontsize=9)
        axes[3].set_title("classifier", fontsize=10)
    else:
        _message(axes[3], "classifier", "no classifier given:\nclass scores not computed")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def draw_analysis_panel(
    grey,
    prediction,
    metadata,
    class_names=None,
    record=None,
    score_threshold=0.0,
    title=None,
    *,
    lesions=None,
    view=None,
    mask_threshold=0.5,
):
    """One slice as in the paper's Figure 2: the lesions, the mask probability, the ground
    truth, the classes.

    The lesions (connected regions of the union mask) are drawn semi-transparent in one colour
    scale, their score, with a colour bar and their ids; orientation letters and a scale bar
    where ``view`` knows them. The mask probability (the sigmoid of the mask logits of every
    instance, pasted into its box, the largest kept) is drawn at the size of the prediction,
    with its colour bar and the mask threshold.

    Args:
        grey (np.ndarray): (H, W) uint8 slice as displayed (windowed).
        prediction (SlicePrediction): from :class:`ct_lesion_d2.engine.CTLesionPredictor`.
        metadata (Metadata): gives ``thing_classes`` for the ground truth.
        class_names (list[str] or None): the classifier's classes.
        record (dict or None): Detectron2 dataset dict of the slice; None = ground truth unknown.
        score_threshold (float): the lowest lesion confidence drawn (the colour scale's bottom).
        title (str or None): figure title.
        lesions (tuple[np.ndarray, dict[int, float]] or None): the slice's (H, W) lesion ids
            and id -> score, from the scan's lesion table; None = the slice's own
            (:func:`slice_lesions`).
        view (SliceView or None): orientation and spacing (:func:`slice_view`); None = unknown.
        mask_threshold (float): the mask probability threshold, marked on the probability map.

    Returns:
        np.ndarray: RGB uint8 image of the panel.
    """
    return figure_to_array(
        analysis_figure(
            grey,
            prediction,
            metadata,
            class_names,
            record,
            score_threshold,
            title,
            lesions=lesions,
            view=view,
            mask_threshold=mask_threshold,
        )
    )


def draw_roi_statistics(prediction, top=TOP_ROIS, title=None):
    """Histogram of RoI confidence and scatter of RoI area against confidence, for the top
    ``top`` RoIs and for the whole ranked batch (the paper's Figure 3).

    Args:
        prediction (SlicePrediction): gives ``roi_scores``, ``roi_boxes``, ``roi_source``.
        top (int): RoIs in the left column.
        title (str or None): figure title.

    Returns:
        np.ndarray: RGB uint8 image.
    """
    scores = prediction.roi_scores.float().numpy()
    boxes = prediction.roi_boxes.float().numpy()
    areas = (boxes[:, 2] - boxes[:, 0]).clip(min=0) * (boxes[:, 3] - boxes[:, 1]).clip(min=0)
    fig = Figure(figsize=(10, 7), dpi=100)
    axes = fig.subplots(2, 2)
    for col, count in enumerate((min(top, len(scores)), len(scores))):
        label = f"top {count}" if col == 0 else f"whole batch ({count})"
        axes[0, col].hist(scores[:count], bins=np.linspace(0, 1, 21), color="#1f77b4")
        axes[0, col].set_xlim(0, 1)
        axes[0, col].set_xlabel("RoI confidence")
        axes[0, col].set_ylabel("RoIs")
        axes[0, col].set_title(f"confidence, {label}", fontsize=10)
        axes[1, col].scatter(scores[:count], areas[:count], s=12, alpha=0.7, color="#d62728")
        axes[1, col].set_xlim(0, 1)
        axes[1, col].set_xlabel("RoI confidence")
        axes[1, col].set_ylabel("box area (pixels)")
        axes[1, col].set_title(f"area vs confidence, {label}", fontsize=10)
    source = (
        f"ranked RoI batch of the {prediction.roi_source}: "
        f"{prediction.roi_num_detections} distinct RoIs, {len(scores)} rows"
    )
    fig.suptitle(f"{title}\n{source}" if title else source, fontsize=10)
    fig.tight_layout()
    return figure_to_array(fig)


def save_slice_figures(
    folder,
    stem,
    grey,
    prediction,
    metadata,
    class_names=None,
    record=None,
    title=None,
    **panel_options,
):
    """Draw and save the analysis panel and the RoI statistics of one slice.

    Args:
        folder (str): existing output folder.
        stem (str): file name prefix; writes ``<stem>_panel.png`` and ``<stem>_rois.png``.
        grey, prediction, metadata, class_names, record, title: see
            :func:`draw_analysis_panel` and :func:`draw_roi_statistics`.
        panel_options: ``score_threshold``, ``lesions``, ``view``, ``mask_threshold`` of
            :func:`draw_analysis_panel`.

    Returns:
        dict[str, tuple[str, np.ndarray]]: "panel" and "rois" -> (path, RGB image).
    """
    from PIL import Image

    images = {
        "panel": draw_analysis_panel(
            grey, prediction, metadata, class_names, record, title=title, **panel_options
        ),
        "rois": draw_roi_statistics(prediction, title=title),
    }
    saved = {}
    for key, image in images.items():
        path = os.path.join(folder, f"{stem}_{key}.png")
        Image.fromarray(image).save(path)
        saved[key] = (path, image)
    return saved
