from .covid_ct_mask_net import (
    CTMaskNetClassifier,
    build_s_module,
    ranked_roi_batches,
    roi_batch_options,
)
from .roi_batch import RoIBatch, build_roi_batch, rank_candidates, replicate_in_rank_order
from .segmentation_weights import (
    SegmentationWeightsReport,
    initialize_from_segmenter,
    is_classifier_config,
    load_model_weights,
    load_segmentation_weights,
)

__all__ = [
    "CTMaskNetClassifier",
    "RoIBatch",
    "SegmentationWeightsReport",
    "build_roi_batch",
    "build_s_module",
    "initialize_from_segmenter",
    "is_classifier_config",
    "load_model_weights",
    "load_segmentation_weights",
    "rank_candidates",
    "ranked_roi_batches",
    "replicate_in_rank_order",
    "roi_batch_options",
]
