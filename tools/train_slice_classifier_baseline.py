#!/usr/bin/env python
"""Train and evaluate a from-scratch torchvision slice classifier beside COVID-CT-Mask-Net.

    python tools/train_slice_classifier_baseline.py --arch resnet18 --minutes 10 \\
        --output output/baseline_resnet18_ucsd
    python tools/train_slice_classifier_baseline.py --arch densenet121 --minutes 10 \\
        --output output/baseline_densenet121_ucsd --config-file configs/<classifier>.yaml

The slices, their size, their augmentation and the evaluated splits come from the classifier
config (``DATASETS.TRAIN`` / ``TEST``, ``INPUT.*``); trailing ``KEY VALUE`` pairs override it.
``--output`` gets ``baseline_results.json`` (training record and metrics), ``model_final.pth``
and the evaluator's files; the results table is printed.
"""

import argparse

from detectron2.utils.logger import setup_logger

import ct_lesion_d2  # noqa: F401  (registers datasets)
from ct_lesion_d2.benchmark.slice_classifier_baseline import (
    BASELINE_ARCHS,
    results_table,
    train_slice_classifier_baseline,
)
from ct_lesion_d2.engine import match_num_classes, resolve_device
from ct_lesion_d2.model_zoo import get_config

DEFAULT_CONFIG = "classifier_R18_T1_ucsd_realct_features_cpu.yaml"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", required=True, choices=list(BASELINE_ARCHS))
    parser.add_argument("--minutes", type=float, required=True, help="wall-clock training budget")
    parser.add_argument("--output", required=True, help="folder for the results")
    parser.add_argument("--config-file", default=DEFAULT_CONFIG, help="classifier config")
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate")
    parser.add_argument("--batch-size", type=int, help="default: SOLVER.IMS_PER_BATCH")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE")
    args = parser.parse_args(argv)
    setup_logger(name="ct_lesion_d2")
    cfg = match_num_classes(resolve_device(get_config(args.config_file, args.opts)))
    results = train_slice_classifier_baseline(
        cfg, args.arch, args.minutes, args.output, lr=args.lr, batch_size=args.batch_size
    )
    print(results_table(results, cfg.DATASETS.TEST))


if __name__ == "__main__":
    main()
