#!/usr/bin/env python
"""Train or evaluate ct-lesion-d2 models with Detectron2's ``DefaultTrainer``.

    python tools/train_net.py --config-file configs/mask_rcnn_R18_T1_FPN1_lesion.yaml
    python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/.../model_final.pth
    python tools/train_net.py --config-file ... --num-gpus 2     # 2 processes (GPUs, or CPU)

Runs on CUDA where there is a GPU and on the CPU everywhere else. Several processes or machines
go through Detectron2's ``launch`` (``--num-gpus``, ``--num-machines``, ``--machine-rank``,
``--dist-url``); on a machine without CUDA, ``--num-gpus N`` starts N CPU processes (GLOO), which
needs the official Detectron2. An ``OUTPUT_DIR`` that holds checkpoints is continued with
``--resume`` or replaced with ``--overwrite``, never silently.

The terminal shows what is trained, a progress bar (where stderr is a terminal, or with
``--progress``), warnings, errors and the results; the environment, the config, the model and
the periodic metrics go to ``OUTPUT_DIR/log.txt`` (and to the terminal with ``--verbose``).
"""

import argparse
import glob
import logging
import os

# isort: off
# The package first: it spares every entry point Detectron2's import notices, and registers
# the backbones and datasets.
import ct_lesion_d2  # noqa: F401

# isort: on
import torch
from detectron2.config import get_cfg
from detectron2.engine import default_argument_parser, launch
from detectron2.evaluation import verify_results

from ct_lesion_d2 import add_ct_lesion_config
from ct_lesion_d2.config import device_asked
from ct_lesion_d2.engine import (
    AtomicDetectionCheckpointer,
    CTLesionTrainer,
    match_num_classes,
    resolve_device,
)
from ct_lesion_d2.engine.console import TRAIN_LOGGER, log_results, quiet_default_setup
from ct_lesion_d2.engine.hooks import TrainingProgress
from ct_lesion_d2.utils import compat
from ct_lesion_d2.utils.cli import quiet_third_party_warnings

logger = logging.getLogger(TRAIN_LOGGER)


def setup(args):
    cfg = get_cfg()
    add_ct_lesion_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    resolve_device(cfg, asked=device_asked(args.config_file, args.opts))
    match_num_classes(cfg)
    cfg.freeze()
    # default_setup's preamble (environment, config, ...) in OUTPUT_DIR/log.txt only
    quiet_default_setup(cfg, args, verbose=args.verbose)
    return cfg


def main(args):
    quiet_third_party_warnings()
    cfg = setup(args)
    log = os.path.join(cfg.OUTPUT_DIR, "log.txt")
    name = os.path.basename(args.config_file)
    if args.eval_only:
        logger.info(f"Evaluating {cfg.MODEL.WEIGHTS} ({name}) on {cfg.MODEL.DEVICE}; log: {log}")
        model = CTLesionTrainer.build_model(cfg)
        AtomicDetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        res = CTLesionTrainer.test(cfg, model)
        if cfg.TEST.AUG.ENABLED:
            res.update(CTLesionTrainer.test_with_TTA(cfg, model))
        verify_results(cfg, res)
        log_results(res)
        return res
    logger.info(
        f"Training {name} for {cfg.SOLVER.MAX_ITER} iterations on {cfg.MODEL.DEVICE}; config, "
        f"model and metrics in {log}" + ("" if args.verbose else " (--verbose: here too)")
    )
    # DefaultTrainer's EvalHook evaluates every TEST.EVAL_PERIOD iterations and after training.
    trainer = CTLesionTrainer(cfg)
    trainer.register_hooks([TrainingProgress(args.progress)])
    trainer.resume_or_load(resume=args.resume)
    res = trainer.train()
    log_results(trainer.eval_results())
    logger.info(f"Done: {cfg.OUTPUT_DIR}")
    return res


def check_launch(args):
    """Detectron2 0.6's ``launch`` asserts CUDA for more than one process: say it plainly."""
    world_size = args.num_gpus * args.num_machines
    if world_size > 1 and not torch.cuda.is_available() and not compat.LAUNCH_ON_CPU:
        raise SystemExit(
            f"error: {world_size} processes without CUDA need the official Detectron2 "
            f"(this is {compat.detectron2_build()}); see the README's set-up, or use --num-gpus 1"
        )


def output_dir_of(args):
    """OUTPUT_DIR as the config and the overrides give it, read before any process starts."""
    cfg = get_cfg()
    add_ct_lesion_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    return cfg.OUTPUT_DIR


def check_output_dir(args):
    """Refuse to train into an OUTPUT_DIR holding checkpoints without --resume; with
    --overwrite, delete them (and the data order record) first, so that a later --resume cannot
    pick up the old run."""
    if args.eval_only or args.resume or args.machine_rank != 0:
        return
    output_dir = output_dir_of(args)
    found = sorted(glob.glob(os.path.join(output_dir, "*.pth")))
    found += [p for p in [os.path.join(output_dir, "last_checkpoint")] if os.path.exists(p)]
    if found and args.overwrite:
        record = os.path.join(output_dir, "data_order.json")
        for path in found + ([record] if os.path.exists(record) else []):
            os.remove(path)
        print(f"--overwrite: removed {len(found)} checkpoint files from {output_dir}")
    elif found:
        names = [os.path.basename(p) for p in found]
        first = "model_final.pth" if "model_final.pth" in names else names[0]
        more = f" and {len(names) - 1} more" if len(names) > 1 else ""
        raise SystemExit(
            f"error: OUTPUT_DIR {output_dir} holds checkpoints ({first}{more}): pass --resume "
            "to continue that run, --overwrite to replace it, or another OUTPUT_DIR"
        )


def parse_args(argv=None):
    parser = default_argument_parser()
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="train from scratch into an OUTPUT_DIR holding checkpoints (deleted first)",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show the whole log on the terminal (environment, config, model, metrics)",
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a progress bar over the iterations (default: where stderr is a terminal)",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    check_launch(args)
    check_output_dir(args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
