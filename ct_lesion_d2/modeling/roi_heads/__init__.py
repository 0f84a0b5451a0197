from .gather_roi_heads import CTLesionROIHeads

__all__ = ["CTLesionROIHeads"]
