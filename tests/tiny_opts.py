"""Config overrides that make the test models tiny (128 px, few proposals, CPU), shared by the
tests that train (tests/, on sys.path under pytest)."""

# Slices resized to 128 px, training and test.
_INPUT_128 = [
    "INPUT.MIN_SIZE_TRAIN",
    "(128,)",
    "INPUT.MAX_SIZE_TRAIN",
    "128",
    "INPUT.MIN_SIZE_TEST",
    "128",
    "INPUT.MAX_SIZE_TEST",
    "128",
]

# A segmenter that trains a few iterations in seconds (RPN proposals cut to 64).
TINY_SEGMENTER = [
    "MODEL.DEVICE",
    "cpu",
    "SEED",
    "0",
    "DATALOADER.NUM_WORKERS",
    "0",
    *_INPUT_128,
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN",
    "256",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN",
    "64",
    "MODEL.RPN.PRE_NMS_TOPK_TEST",
    "256",
    "MODEL.RPN.POST_NMS_TOPK_TEST",
    "64",
]

# A few-iteration segmenter schedule: one slice per batch, 32 RoIs per slice, 2 warm-up
# iterations, no steps, a checkpoint every 2 iterations (the resume and fault tests).
TINY_SCHEDULE = [
    "INPUT.RANDOM_FLIP",
    "horizontal",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
    "32",
    "SOLVER.IMS_PER_BATCH",
    "1",
    "SOLVER.WARMUP_ITERS",
    "2",
    "SOLVER.STEPS",
    "()",
    "SOLVER.CHECKPOINT_PERIOD",
    "2",
]

# A classifier on 128 px slices (300 test proposals: the ranked RoI batch needs its rows).
TINY_CLASSIFIER = [
    *_INPUT_128,
    "MODEL.RPN.POST_NMS_TOPK_TEST",
    "300",
    "MODEL.DEVICE",
    "cpu",
    "DATALOADER.NUM_WORKERS",
    "0",
]
