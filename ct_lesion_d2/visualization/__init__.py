from .overlay import draw_ground_truth, draw_predictions, save_prediction_panels

__all__ = ["draw_ground_truth", "draw_predictions", "save_prediction_panels"]
