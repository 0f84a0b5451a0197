from .analysis import (
    combined_mask_logits,
    draw_analysis_panel,
    draw_roi_statistics,
    lesion_metadata,
    save_slice_figures,
)
from .overlay import draw_ground_truth, draw_predictions, save_prediction_panels

__all__ = [
    "combined_mask_logits",
    "draw_analysis_panel",
    "draw_ground_truth",
    "draw_predictions",
    "draw_roi_statistics",
    "lesion_metadata",
    "save_prediction_panels",
    "save_slice_figures",
]
