from .gather_roi_heads import CTLesionROIHeads, IndexedBitMasks

__all__ = ["CTLesionROIHeads", "IndexedBitMasks"]
