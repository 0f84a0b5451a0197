"""Check that a speed change keeps the segmenter's AP: eager vs optimised, and config variants.

The command line of ``tools/benchmark_accuracy.py``:

    python tools/benchmark_accuracy.py \\
        --config-file configs/mask_rcnn_R18_T1_FPN1_medseg100_cpu.yaml \\
        --dataset ct_lesion_medseg100_val \\
        --variant "proposals300=MODEL.RPN.POST_NMS_TOPK_TEST 300" \\
        MODEL.WEIGHTS output/mask_rcnn_R18_T1_FPN1_medseg100_cpu/model_final.pth

Every variant (the config as given, named ``config``, then each ``--variant NAME=KEY VALUE ...``)
is evaluated in each ``--modes`` (``eager``; ``optimized`` = ``optimize_for_inference``) with
Detectron2's COCOEvaluator. Beside each AP it prints the difference to the first row and the
jackknife standard error of that paired difference (leave one image out, per-image AP
recomputed by pycocotools), so that "the same AP within noise" is a number, not a claim.
"""

import argparse
import contextlib
import copy
import io
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.evaluation import inference_on_dataset
from detectron2.modeling import build_model
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ..config import get_cfg_for
from ..engine import CTLesionTrainer
from ..export import optimize_for_inference
from ..modeling.meta_arch import load_model_weights
from ..utils.files import write_json_atomic
from .measure import machine, quiet_warnings


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", required=True, help="a segmenter config")
    parser.add_argument("--dataset", required=True, help="registered COCO dataset to evaluate")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=KEY VALUE ...",
        help="a config variant to compare (repeatable)",
    )
    parser.add_argument(
        "--modes", nargs="+", default=["eager", "optimized"], choices=["eager", "optimized"]
    )
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="overrides for every variant")
    args = parser.parse_args(argv)
    variants = [("config", [])]
    for item in args.variant:
        name, sep, opts = item.partition("=")
        if not sep or not name or len(opts.split()) % 2:
            parser.error(f"--variant {item!r}: expected NAME=KEY VALUE [KEY VALUE ...]")
        variants.append((name, opts.split()))
    args.variants = variants
    if args.json and os.path.exists(args.json) and not args.overwrite:
        parser.error(f"{args.json} exists; pass --overwrite to replace it")
    return args


def coco_ap(coco_gt, detections, image_ids, iou_type):
    """(AP, AP50) in percent of ``detections`` restricted to ``image_ids``."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(detections) if detections else coco_gt.loadRes([])
        evaluator = COCOeval(coco_gt, coco_dt, iou_type)
        evaluator.params.imgIds = list(image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return np.array(evaluator.stats[:2]) * 100


def jackknife(coco_gt, detections, iou_type):
    """AP, AP50 with each image left out in turn: an (images, 2) array."""
    ids = sorted(coco_gt.getImgIds())
    return np.stack(
        [coco_ap(coco_gt, detections, [i for i in ids if i != j], iou_type) for j in ids]
    )


def paired_se(leave_one_out, reference):
    """Jackknife standard error of the difference of two statistics over the same images."""
    diff = leave_one_out - reference
    n = len(diff)
    return np.sqrt((n - 1) / n * ((diff - diff.mean(0)) ** 2).sum(0))


def evaluate(cfg, dataset, mode, folder):
    """COCOEvaluator results, the raw detections and seconds per image of one model."""
    model = build_model(cfg)
    load_model_weights(model, cfg)
    model.eval()
    if mode == "optimized":
        model = optimize_for_inference(copy.deepcopy(model))
    evaluator = CTLesionTrainer.build_evaluator(cfg, dataset, output_folder=folder)
    loader = CTLesionTrainer.build_test_loader(cfg, dataset)
    start = time.perf_counter()
    context = torch.inference_mode() if mode == "optimized" else contextlib.nullcontext()
    with context:
        results = inference_on_dataset(model, loader, evaluator)
    seconds = (time.perf_counter() - start) / len(loader)
    with open(os.path.join(folder, "coco_instances_results.json")) as f:
        detections = json.load(f)
    return results, detections, seconds


def main(argv=None):
    args = parse_args(argv)
    quiet_warnings()
    coco_gt = None
    rows = []
    for name, opts in args.variants:
        cfg = get_cfg_for(args.config_file, list(args.opts) + opts)
        if not cfg.MODEL.WEIGHTS:
            raise SystemExit("give MODEL.WEIGHTS: accuracy of a random model means nothing")
        if coco_gt is None:
            with contextlib.redirect_stdout(io.StringIO()):
                coco_gt = COCO(MetadataCatalog.get(args.dataset).json_file)
        for mode in args.modes:
            with tempfile.TemporaryDirectory() as folder:
                results, detections, seconds = evaluate(cfg, args.dataset, mode, folder)
            row = {
                "variant": name,
                "opts": opts,
                "mode": mode,
                "results": results,
                "seconds_per_image": seconds,
                "detections": len(detections),
            }
            row["jackknife"] = {t: jackknife(coco_gt, detections, t) for t in ("bbox", "segm")}
            rows.append(row)
    base = rows[0]
    print(
        f"\n{args.dataset}, {len(coco_gt.getImgIds())} images; differences to "
        f"{base['variant']}/{base['mode']} with their jackknife standard errors\n"
    )
    print(
        "| variant | mode | detections | s/image (with evaluation) | bbox AP | bbox AP50 | "
        "segm AP | segm AP50 | segm AP diff (SE) | segm AP50 diff (SE) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        bbox, segm = row["results"]["bbox"], row["results"]["segm"]
        diff = np.array([segm["AP"], segm["AP50"]]) - np.array(
            [base["results"]["segm"]["AP"], base["results"]["segm"]["AP50"]]
        )
        se = paired_se(row["jackknife"]["segm"], base["jackknife"]["segm"])
        row["segm_diff"], row["segm_diff_se"] = diff.tolist(), se.tolist()
        print(
            f"| {row['variant']} | {row['mode']} | {row['detections']} | "
            f"{row['seconds_per_image']:.3f} | {bbox['AP']:.2f} | {bbox['AP50']:.2f} | "
            f"{segm['AP']:.2f} | {segm['AP50']:.2f} | {diff[0]:+.2f} ({se[0]:.2f}) | "
            f"{diff[1]:+.2f} ({se[1]:.2f}) |"
        )
    if args.json:
        for row in rows:
            row["jackknife"] = {k: v.tolist() for k, v in row["jackknife"].items()}
        record = {"meta": {**machine(), "command": " ".join(sys.argv)}, "rows": rows}
        write_json_atomic(record, args.json, overwrite=args.overwrite)
        print(f"results written to {args.json}")
