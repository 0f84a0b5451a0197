from .covid_ct_mask_net import CTMaskNetClassifier, build_s_module, ranked_roi_batches
from .roi_batch import RoIBatch, build_roi_batch, rank_candidates, replicate_in_rank_order
from .segmentation_weights import SegmentationWeightsReport, load_segmentation_weights

__all__ = [
    "CTMaskNetClassifier",
    "RoIBatch",
    "SegmentationWeightsReport",
    "build_roi_batch",
    "build_s_module",
    "load_segmentation_weights",
    "rank_candidates",
    "ranked_roi_batches",
    "replicate_in_rank_order",
]
