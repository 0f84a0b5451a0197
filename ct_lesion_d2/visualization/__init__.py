from .analysis import (
    analysis_figure,
    combined_mask_logits,
    draw_analysis_panel,
    draw_roi_statistics,
    lesion_metadata,
    mask_probability_map,
    save_slice_figures,
    slice_lesions,
)
from .lesion_overlay import (
    SliceView,
    draw_lesion_overlay,
    lesion_colour,
    orientation_letters,
    scale_bar_length_mm,
    scale_bar_pixels,
    slice_view,
)
from .overlay import draw_ground_truth, draw_predictions, save_prediction_panels

__all__ = [
    "SliceView",
    "analysis_figure",
    "combined_mask_logits",
    "draw_analysis_panel",
    "draw_ground_truth",
    "draw_lesion_overlay",
    "draw_predictions",
    "draw_roi_statistics",
    "lesion_colour",
    "lesion_metadata",
    "mask_probability_map",
    "orientation_letters",
    "save_prediction_panels",
    "save_slice_figures",
    "scale_bar_length_mm",
    "scale_bar_pixels",
    "slice_lesions",
    "slice_view",
]
