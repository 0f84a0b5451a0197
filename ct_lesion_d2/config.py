"""Project config keys of ct-lesion-d2, added to Detectron2's defaults, and the one way the
tools build a config: :func:`get_cfg_for`."""

import logging

import torch
from detectron2.config import CfgNode as CN
from detectron2.config import get_cfg

__all__ = ["add_ct_lesion_config", "device_asked", "get_cfg_for", "resolve_device"]

logger = logging.getLogger(__name__)


def resolve_device(cfg, asked=True):
    """Fall back to the CPU when the config asks for CUDA on a machine without it.

    Detectron2's default ``MODEL.DEVICE`` is "cuda"; the project runs on CUDA where there is a
    GPU and on the CPU everywhere else. The fallback is a warning only when the device was
    asked for (``asked``); configs written for the CPU leave Detectron2's default alone, and
    then it is silent (a DEBUG line). Modifies ``cfg`` (unfrozen) in place.

    Args:
        cfg (CfgNode): the merged config.
        asked (bool): the config file, the overrides or an option set ``MODEL.DEVICE``
            (:func:`device_asked`).

    Returns:
        CfgNode: ``cfg``.
    """
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        level = logging.WARNING if asked else logging.DEBUG
        logger.log(
            level, "MODEL.DEVICE=%s but CUDA is not available: using the CPU", cfg.MODEL.DEVICE
        )
        cfg.MODEL.DEVICE = "cpu"
    return cfg


def device_asked(config_file, opts=(), device=None):
    """Whether ``MODEL.DEVICE`` was set by the user rather than left at Detectron2's default:
    by ``device``, by the ``KEY VALUE`` overrides, or by the config file (its ``_BASE_`` files
    included).

    Args:
        config_file (str): a YAML path (or a name :func:`get_cfg_for` resolves).
        opts (Sequence[str]): ``KEY VALUE`` overrides.
        device (str or None): a device option (predict.py's ``--device``).

    Returns:
        bool
    """
    from .model_zoo import config_path

    if device or "MODEL.DEVICE" in list(opts)[::2]:
        return True
    merged = CN.load_yaml_with_base(config_path(config_file), allow_unsafe=True)
    return "DEVICE" in (merged.get("MODEL") or {})


def get_cfg_for(config_file, opts=(), device=None):
    """A config with the project keys, merged from ``config_file`` and then ``opts``.

    Every tool builds its configs here, with Detectron2's ``KEY VALUE`` list of overrides
    (the positional ``opts`` of the command lines).

    Args:
        config_file (str): a YAML path, a file name under ``configs/`` or a variant name of
            ``ct_lesion_d2.model_zoo`` (``mask_rcnn_R18_T1``, ``classifier_R18_T1``).
        opts (Sequence[str]): ``KEY VALUE`` overrides.
        device (str or None): ``MODEL.DEVICE`` to set ("cpu", "cuda", "cuda:1"); None keeps
            the config's. Either way CUDA falls back to the CPU where it is absent, with a
            warning only when ``device``, ``opts`` or the file asked for it.

    Returns:
        CfgNode: unfrozen.
    """
    from .model_zoo import config_path

    cfg = get_cfg()
    add_ct_lesion_config(cfg)
    cfg.merge_from_file(config_path(config_file))
    cfg.merge_from_list(list(opts))
    if device:
        cfg.MODEL.DEVICE = device
    return resolve_device(cfg, asked=device_asked(config_file, opts, device))


def add_ct_lesion_config(cfg):
    """Add the ct-lesion-d2 keys to a Detectron2 config, in place.

    Args:
        cfg (CfgNode): a config from ``detectron2.config.get_cfg()``.
    """
    cfg.MODEL.CT_BACKBONE = CN()
    # Number of final ResNet stages removed: 0 = T0 (FPN on res5), 1 = T1 (res4), 2 = T2 (res3).
    cfg.MODEL.CT_BACKBONE.TRUNCATION = 0
    # FPN levels: 1 = the paper's single level on the last kept stage; 4 = standard FPN res2-res5.
    cfg.MODEL.CT_BACKBONE.FPN_LEVELS = 1

    # Optimizer: "SGD" (Detectron2's default) or "ADAM" (the paper: Adam, lr 1e-5, wd 1e-3).
    cfg.SOLVER.CT_OPTIMIZER = "SGD"
    # Stochastic weight averaging (engine/hooks.py, WeightAverage): the model trained is the
    # mean of its weights (and BatchNorm statistics) from iteration START * MAX_ITER to the end
    # (0.75: the last quarter of training; Izmailov et al. 2018). Off in the paper's configs.
    cfg.SOLVER.SWA = CN()
    cfg.SOLVER.SWA.ENABLED = False
    cfg.SOLVER.SWA.START = 0.75

    # COVID-CT-Mask-Net image classifier (docs/PAPER.md, section 2), "CTMaskNetClassifier".
    cfg.MODEL.CT_CLASSIFIER = CN()
    # Detectron2 checkpoint of the trained Mask R-CNN whose detector is reused ("" = random).
    cfg.MODEL.CT_CLASSIFIER.SEGMENTATION_WEIGHTS = ""
    # B: ranked detections per image fed to module S (128; 256 for the ResNet50 baseline).
    cfg.MODEL.CT_CLASSIFIER.BATCH_DETECTIONS = 128
    # F: width of the two hidden layers of module S (512; 1024 for the ResNet50 baseline).
    cfg.MODEL.CT_CLASSIFIER.HIDDEN_DIM = 512
    # Image classes: 0 Control, 1 Common Pneumonia, 2 COVID-19.
    cfg.MODEL.CT_CLASSIFIER.NUM_CLASSES = 3
    # RoI score threshold; below zero so that no candidate is dropped for its score.
    cfg.MODEL.CT_CLASSIFIER.ROI_SCORE_THRESH = -0.01
    # IoU threshold of the class-specific NMS over the RoI detections.
    cfg.MODEL.CT_CLASSIFIER.ROI_NMS_THRESH = 0.75
    # Drop zero-area boxes, then replicate survivors in rank order to fill B (else pad zeros).
    cfg.MODEL.CT_CLASSIFIER.REMOVE_EMPTY_BOXES = True
    # Score detections with a sigmoid of the class logit instead of the softmax over classes.
    cfg.MODEL.CT_CLASSIFIER.SIGMOID_SCORES = False
    # The image class: below 0 the argmax of the logits (the paper); for two classes, a
    # probability at which the second (positive) class is called, an operating point chosen
    # on a validation split (CTClassificationEvaluator reports Youden's threshold there).
    cfg.MODEL.CT_CLASSIFIER.DECISION_THRESHOLD = -1.0
    # The 4 numbers after the score: "deltas" (raw regression) or "boxes" (decoded, / image w, h).
    cfg.MODEL.CT_CLASSIFIER.ROW_FEATURES = "deltas"
    # Train the affine weight/bias of the backbone BatchNorm layers beside module S.
    cfg.MODEL.CT_CLASSIFIER.TRAIN_BN_AFFINE = True
    # Compute the training images' ranked RoI batches once and train module S on them alone.
    # Needs TRAIN_BN_AFFINE False (the detector then never changes); the cached batches come
    # from the inference mapper (augmentations only through CACHE_AUGMENTED_VIEWS below).
    cfg.MODEL.CT_CLASSIFIER.CACHE_ROI_BATCHES = False
    # Beyond the paper (all off in its configs; off, module S and its input are the paper's).
    # Append the frozen box head's feature vector (ROI_BOX_HEAD.FC_DIM numbers) to each row.
    cfg.MODEL.CT_CLASSIFIER.ROI_HEAD_FEATURES = False
    # Lesion burden of the slice (lesion area over image and crude lung area, count, size
    # quantiles; slice_features.py) from the frozen mask head, fed to S through a side branch.
    cfg.MODEL.CT_CLASSIFIER.LESION_BURDEN_FEATURES = False
    # Detections of the mask head counted as lesions for the burden: score at least this.
    cfg.MODEL.CT_CLASSIFIER.BURDEN_SCORE_THRESH = 0.5
    # Global average of the RoI heads' feature map (FPN.OUT_CHANNELS numbers), side branch.
    cfg.MODEL.CT_CLASSIFIER.GLOBAL_FEATURES = False
    # A trainable whole-slice CNN (image_branch.py: "" off; "resnet18", torchvision's, from
    # scratch; "detector_backbone", a copy of the detector's ResNet initialised from
    # SEGMENTATION_WEIGHTS; "ct_resnet", that architecture from scratch) beside S; it trains
    # with S, so it is never cached.
    cfg.MODEL.CT_CLASSIFIER.IMAGE_BRANCH = ""
    # Where the image branch's features go: "features" (S's side branch) or "logits" (a linear
    # layer of its own, its logits added to S's).
    cfg.MODEL.CT_CLASSIFIER.IMAGE_BRANCH_FUSION = "features"
    # The longer side of the slice as the image branch sees it, in pixels.
    cfg.MODEL.CT_CLASSIFIER.IMAGE_BRANCH_SIZE = 224
    # The image branch's learning rate is SOLVER.BASE_LR times this (solver.py): a CNN from
    # scratch needs far more than the paper's 1e-5 for S.
    cfg.MODEL.CT_CLASSIFIER.IMAGE_BRANCH_LR_FACTOR = 1.0
    # Width of S's side branch for the slice features (burden, global, image branch).
    cfg.MODEL.CT_CLASSIFIER.SLICE_HIDDEN_DIM = 64
    # CACHE_ROI_BATCHES: also cache this many views of each training slice through the training
    # mapper (INPUT.RANDOM_FLIP, INPUT.CT_AUGMENTATION), beside the unaugmented one.
    cfg.MODEL.CT_CLASSIFIER.CACHE_AUGMENTED_VIEWS = 0
    # Crop classification slices to the box given with each record (COVIDx-CT body crop).
    cfg.INPUT.CT_CLASSIFIER_CROP = False

    # CT intensities (ct_lesion_d2/data/transforms.py), the same at training and inference.
    # What the model expects: "uint8_windowed" (8-bit grey after the window below, the form of
    # the PNG/JPG lesion datasets; HU input is windowed and rounded) or "HU" (raw HU).
    cfg.INPUT.CT_INPUT_UNITS = "uint8_windowed"
    cfg.INPUT.CT_WINDOW = CN()
    # Window applied to HU input of a "uint8_windowed" model: the lung window by default.
    cfg.INPUT.CT_WINDOW.LEVEL = -600.0
    cfg.INPUT.CT_WINDOW.WIDTH = 1500.0

    # Training augmentations beyond Detectron2's (ct_lesion_d2/data/augmentation.py), all off
    # in the paper's configs; the real-CT recipe switches them on.
    cfg.INPUT.CT_AUGMENTATION = CN()
    # Random vertical flip (in addition to INPUT.RANDOM_FLIP).
    cfg.INPUT.CT_AUGMENTATION.VERTICAL_FLIP = False
    # Random rotation in [-ROTATION, ROTATION] degrees (0 = off); boxes follow the masks.
    cfg.INPUT.CT_AUGMENTATION.ROTATION = 0.0
    # Contrast and brightness factors uniform in [1 - x, 1 + x] (0 = off).
    cfg.INPUT.CT_AUGMENTATION.CONTRAST = 0.0
    cfg.INPUT.CT_AUGMENTATION.BRIGHTNESS = 0.0
    # Gamma with log-uniform factor in [1 / GAMMA, GAMMA] (1.0 = off).
    cfg.INPUT.CT_AUGMENTATION.GAMMA = 1.0
    # Probability of CLAHE (the local contrast of CLAHE exports such as covid19_ct_seg), and
    # the range its clip limit is drawn from.
    cfg.INPUT.CT_AUGMENTATION.CLAHE_PROB = 0.0
    cfg.INPUT.CT_AUGMENTATION.CLAHE_CLIP_LIMIT = (1.0, 3.0)

    # Per-dataset repeat factors of DATASETS.TRAIN (one per name, empty = all 1.0): a source
    # with a factor of 4 is sampled four times as often per slice, so that a small source is
    # not drowned by a large one (DATALOADER.SAMPLER_TRAIN "TrainingSampler" only).
    cfg.DATALOADER.CT_DATASET_REPEAT = ()

    # Lesion evaluator (ct_lesion_d2/evaluation/lesion_evaluation.py) beside COCOEvaluator.
    cfg.TEST.CT_LESION_EVAL = CN()
    # Predicted instances with a lower score are left out of the union and the lesion counts.
    cfg.TEST.CT_LESION_EVAL.SCORE_THRESH = 0.5
    # Mask IoU at which a predicted instance detects a ground-truth lesion.
    cfg.TEST.CT_LESION_EVAL.LESION_IOU_THRESH = 0.1
    # Scores at which pixel Dice, precision and recall are pooled too: a table in the log,
    # score_curve in lesion_per_slice.json, lesion_dice_vs_score.png; () for none.
    cfg.TEST.CT_LESION_EVAL.CURVE_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)

    # RoI pooling of MODEL.ROI_HEADS.NAME "CTLesionROIHeads" (ct_lesion_d2/modeling/roi_heads/).
    cfg.MODEL.CT_ROI_POOLING = CN()
    # RoIAlign as a multi-threaded weighted gather on the CPU, training and inference (the same
    # result as torchvision's to float rounding); needs that ROI_HEADS.NAME, else has no effect.
    cfg.MODEL.CT_ROI_POOLING.GATHER = False

    # Backbone convolution weights channels-last (NHWC), the same model: CPU training measured
    # faster with BatchNorm, not with GroupNorm (docs/BENCHMARKS.md decides; off by default).
    cfg.MODEL.CT_BACKBONE.CHANNELS_LAST = False
