#!/usr/bin/env python
"""Train MONAI's 2D U-Net on the real-CT recipe's slices for a wall-clock budget and score it
with the lesion evaluator's Dice code on the recipe's validation sets.

    pip install -r requirements-bench.txt      # MONAI, an optional extra
    python tools/train_unet_baseline.py --minutes 60 --output output/unet_baseline_60min
    python tools/train_unet_baseline.py --minutes 120 --output output/unet_baseline_60min --resume
    python tools/train_unet_baseline.py --output output/unet_baseline_60min --eval-only

Prints a table (percent) and writes ``unet_results.json`` and per-slice JSON into ``--output``.
Trailing ``KEY VALUE`` pairs override the config, as in ``tools/train_net.py``.
"""

import argparse
import logging

import ct_lesion_d2  # noqa: F401  (registers the datasets)
from ct_lesion_d2.benchmark.unet_baseline import DEFAULT_CONFIG, run_unet_baseline


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--config-file",
        default=DEFAULT_CONFIG,
        help="Mask R-CNN config giving the data, sampling, augmentation, batch "
        "size and seed (default: %(default)s)",
    )
    parser.add_argument(
        "--minutes",
        type=float,
        default=60.0,
        help="training budget in wall-clock minutes, resumed parts included",
    )
    parser.add_argument("--output", required=True, help="folder of checkpoints and results")
    parser.add_argument(
        "--resume", action="store_true", help="continue from the checkpoint in --output"
    )
    parser.add_argument(
        "--eval-only", action="store_true", help="score the checkpoint in --output without training"
    )
    parser.add_argument(
        "--max-iter",
        type=int,
        default=None,
        help="stop after this many iterations if the budget lasts longer",
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    return run_unet_baseline(
        args.output,
        config_file=args.config_file,
        opts=args.opts,
        minutes=args.minutes,
        resume=args.resume,
        eval_only=args.eval_only,
        max_iter=args.max_iter,
    )


if __name__ == "__main__":
    main()
