#!/usr/bin/env python
"""Train or evaluate ct-lesion-d2 models with Detectron2's ``DefaultTrainer``.

    python tools/train_net.py --config-file configs/mask_rcnn_R18_T1_FPN1_lesion.yaml
    python tools/train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/.../model_final.pth

Runs on CUDA where there is a GPU and on the CPU everywhere else; several GPUs or machines go
through Detectron2's ``launch`` (``--num-gpus``, ``--num-machines``).
"""
import torch
from detectron2.config import get_cfg
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

import ct_lesion_d2  # noqa: F401  (registers backbones and datasets)
from ct_lesion_d2 import add_ct_lesion_config
from ct_lesion_d2.engine import (
    AtomicDetectionCheckpointer,
    CTLesionTrainer,
    match_num_classes,
    resolve_device,
)


def setup(args):
    cfg = get_cfg()
    add_ct_lesion_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    resolve_device(cfg)
    match_num_classes(cfg)
    cfg.freeze()
    default_setup(cfg, args)
    setup_logger(output=cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="ct_lesion_d2")
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = CTLesionTrainer.build_model(cfg)
        AtomicDetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        res = CTLesionTrainer.test(cfg, model)
        verify_results(cfg, res)
        return res
    # DefaultTrainer's EvalHook evaluates every TEST.EVAL_PERIOD iterations and after training.
    trainer = CTLesionTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def check_gpus(args):
    """Detectron2 0.6's ``launch`` asserts CUDA for more than one process: say it plainly."""
    if args.num_gpus > 1 and torch.cuda.device_count() < args.num_gpus:
        raise SystemExit(
            f"--num-gpus {args.num_gpus} needs {args.num_gpus} CUDA devices; this machine has "
            f"{torch.cuda.device_count()}. On the CPU, train with --num-gpus 1."
        )


if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    check_gpus(args)
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
