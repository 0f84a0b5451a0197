"""Benchmark inference and training of the segmentation variants: eager and optimised, exported.

The command line of ``tools/benchmark_seg.py``:

    python tools/benchmark_seg.py                                   # all seven, every mode
    python tools/benchmark_seg.py --images ../shared/data/medseg100/images \\
        --weights mask_rcnn_R18_T1=output/.../model_final.pth --json bench.json
    python tools/benchmark_seg.py --models mask_rcnn_R18_T1 mask_rcnn_R50 --modes eager optimized
    python tools/benchmark_seg.py --models mask_rcnn_R18_T1 --stages --train-iters 0
    python tools/benchmark_seg.py --detections 16     # every model exactly 16 detections

Modes: ``eager`` (the model as built, ``torch.no_grad``: before), ``optimized``
(``ct_lesion_d2.export.optimize_for_inference``: BatchNorm folded, channels-last, RoIAlign as a
gather, ``torch.inference_mode``), ``torchscript`` and ``onnxruntime`` (exported with
``ct_lesion_d2.export``, masks pasted in Python as the eager model does). Each reports the
median and p90 latency of one slice, the throughput with ``--throughput-batch`` slices per call,
the peak memory of loading and running it, and the detections; each model also reports its
fvcore GFLOPs and, in eager mode, the seconds per training iteration. The peak memory covers
building or loading the runner and the single-slice runs.

Models are randomly initialised (``torch.manual_seed(0)``) unless ``--weights NAME=PATH`` gives
a checkpoint; inputs are ``--images`` (real slices, cycled) or one synthetic slice. Prints a
Markdown table; ``--json`` also writes the raw timings.
"""

import argparse
import os
import statistics
import sys
import tempfile

import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances
from tqdm import tqdm

from ..data.converters import TWO_LABEL_MERGED, mask_to_annotations
from ..data.readers import read_grey_image, read_label_mask
from ..data.synthetic import generate_synthetic_slices
from ..export import ExportedSegmenter, export_segmenter
from ..model_zoo import SEGMENTATION_VARIANTS, get_config
from ..modeling.meta_arch import load_model_weights
from ..utils.files import write_json_atomic
from .measure import (
    IN_PROCESS_MODES,
    MEASURE_COLUMNS,
    count,
    gflops,
    in_process_runner,
    list_images,
    machine,
    measure,
    quiet_warnings,
    read_slices,
    slice_input,
    table_rows,
)
from .stages import profile_markdown, profile_model, time_stages, time_training

BASELINE = "mask_rcnn_R50"
MODES = ("eager", "optimized", "torchscript", "onnxruntime")
EXPORT_FORMAT = {"torchscript": "torchscript", "onnxruntime": "onnx"}


def parse_args(argv=None):
    """Parse and check the command line; refuses an existing ``--json`` without ``--overwrite``."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--models",
        nargs="+",
        default=list(SEGMENTATION_VARIANTS),
        choices=list(SEGMENTATION_VARIANTS),
        metavar="NAME",
        help="variants (default: all seven)",
    )
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--size", type=int, default=512, help="slice side in pixels")
    parser.add_argument("--image", help="one grey slice instead of the synthetic one")
    parser.add_argument("--images", help="folder of real slices, cycled over the runs")
    parser.add_argument(
        "--weights",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="checkpoint for a variant (repeatable); others stay randomly initialised",
    )
    parser.add_argument("--warmup", type=int, default=2, help="untimed inference runs")
    parser.add_argument("--runs", type=int, default=10, help="timed single-slice runs")
    parser.add_argument("--throughput-batch", type=int, default=4, help="slices per call")
    parser.add_argument(
        "--score-thresh",
        type=float,
        default=None,
        help="MODEL.ROI_HEADS.SCORE_THRESH_TEST (default: the config's)",
    )
    parser.add_argument(
        "--detections",
        type=int,
        default=None,
        help="exactly this many detections per slice for every model: score threshold 0 and "
        "TEST.DETECTIONS_PER_IMAGE N (overrides --score-thresh)",
    )
    parser.add_argument(
        "--proposals",
        type=int,
        default=None,
        help="MODEL.RPN.POST_NMS_TOPK_TEST (default: the config's, 1000 as in the paper)",
    )
    parser.add_argument(
        "opts",
        nargs=argparse.REMAINDER,
        metavar="KEY VALUE",
        help="config overrides for every model (e.g. an architecture change to measure)",
    )
    parser.add_argument("--no-flops", action="store_true", help="skip the fvcore flop count")
    parser.add_argument("--stages", action="store_true", help="time each stage (optimized)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="torch.profiler top operators of one optimised inference and one training step",
    )
    parser.add_argument("--batch", type=int, default=2, help="training images per iteration")
    parser.add_argument("--train-warmup", type=int, default=1, help="untimed training iters")
    parser.add_argument("--train-iters", type=int, default=5, help="timed iterations (0: none)")
    parser.add_argument("--json", help="also write the raw numbers to this file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json")
    args = parser.parse_args(argv)
    if len(args.opts) % 2:
        parser.error("--opts takes KEY VALUE pairs")
    if args.runs < 1 or args.train_iters < 0 or args.batch < 1 or args.size < 128:
        parser.error("need --runs, --batch >= 1, --train-iters >= 0 and --size >= 128")
    if args.json and os.path.exists(args.json) and not args.overwrite:
        parser.error(f"{args.json} exists; pass --overwrite to replace it")
    exported = [m for m in args.modes if m in EXPORT_FORMAT]
    if args.device.startswith("cuda") and exported:
        parser.error(
            f"--modes {' '.join(exported)} run on the CPU here; on CUDA use --modes "
            "eager optimized"
        )
    weights = {}
    for item in args.weights:
        name, sep, path = item.partition("=")
        if not sep or name not in SEGMENTATION_VARIANTS:
            parser.error(f"--weights {item}: expected NAME=PATH with NAME a variant")
        if not os.path.isfile(path):
            parser.error(f"--weights {item}: {path} not found")
        weights[name] = path
    args.weights = weights
    return args


def load_slice(size, image_path=None):
    """The training slice and its lesion instances.

    Args:
        size (int): side of the square slice.
        image_path (str): grey image to read and resize to ``size``; None for the COVID-19
            slice (index 2) of ``generate_synthetic_slices(seed=0)``.

    Returns:
        (np.ndarray, np.ndarray, str): HxW uint8 slice, NxHxW bool lesion masks, description.
    """
    if image_path is None:
        with tempfile.TemporaryDirectory() as tmp:
            records = generate_synthetic_slices(tmp, 3, seed=0, size=size, progress=False)
            image = read_grey_image(os.path.join(tmp, records[2]["file_name"]))
            labels = read_label_mask(os.path.join(tmp, records[2]["mask_file"]), (0, 1, 2))
        annotations = mask_to_annotations(labels, TWO_LABEL_MERGED)
        masks = np.stack([mask_util.decode(a["segmentation"]).astype(bool) for a in annotations])
        return image, masks, f"synthetic COVID-19 slice (seed 0), {len(masks)} lesion(s)"
    (image,) = read_slices([image_path], size)
    # No mask for a given image: one elliptical lesion where the image-left lung usually is.
    yy, xx = np.mgrid[:size, :size] / size
    masks = (((xx - 0.3) / 0.08) ** 2 + ((yy - 0.45) / 0.12) ** 2 < 1.0)[None]
    return image, masks, f"{image_path}, 1 synthetic ellipse lesion"


def make_inputs(image, masks):
    """Detectron2 input dicts: inference (no instances) and training (with ground truth)."""
    inputs = slice_input(image)
    h, w = image.shape
    gt = Instances((h, w))
    bitmasks = BitMasks(torch.from_numpy(masks))
    gt.gt_boxes = Boxes(bitmasks.get_bounding_boxes().tensor)
    gt.gt_classes = torch.zeros(len(masks), dtype=torch.int64)
    gt.gt_masks = bitmasks
    return inputs, {"image": inputs["image"], "instances": gt}


def build(name, args):
    """One variant (seed 0) in eval mode, with its checkpoint if ``--weights`` names one."""
    opts = ["MODEL.DEVICE", args.device]
    if args.detections is not None:
        opts += ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]
        opts += ["TEST.DETECTIONS_PER_IMAGE", str(args.detections)]
    elif args.score_thresh is not None:
        opts += ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", str(args.score_thresh)]
    if args.proposals is not None:
        opts += ["MODEL.RPN.POST_NMS_TOPK_TEST", str(args.proposals)]
    if name in args.weights:
        opts += ["MODEL.WEIGHTS", args.weights[name]]
    cfg = get_config(name, opts + list(args.opts))
    torch.manual_seed(0)
    model = build_model(cfg)
    load_model_weights(model, cfg)
    return model.eval(), cfg


def prepare(mode, model, example, folder):
    """A callable ``list[dict] -> list[dict]`` for ``mode``, made from ``model``.

    The exported modes trace ``model`` into ``folder`` first (not part of the measurements).

    Returns:
        (callable, callable): ``setup()`` building the runner (measured for memory), and the
        grad-mode context to call it in.
    """
    if mode in IN_PROCESS_MODES:
        return in_process_runner(mode, model)
    fmt = EXPORT_FORMAT[mode]
    path = os.path.join(folder, f"segmenter.{fmt}")
    export_segmenter(model, example["image"].cpu(), fmt, path, overwrite=True)
    return (lambda: ExportedSegmenter(path)), torch.no_grad


def run_mode(mode, model, inputs, args, folder):
    """Latency, throughput, memory and detections of one mode.

    Returns:
        dict: raw seconds, their statistics and the median number of detections.
    """
    setup, grad_mode = prepare(mode, model, inputs[0], folder)
    row, outputs = measure(
        setup, grad_mode, inputs, args.runs, args.warmup, args.throughput_batch, args.device
    )
    row = {"mode": mode, **row}
    row["detections"] = [len(o[0]["instances"]) for o in outputs]
    row["detections_median"] = statistics.median(row["detections"])
    return row


def benchmark(name, args, inputs, train_batch):
    """All modes of one variant, its FLOPs, stages and training speed.

    Returns:
        dict: ``model``, counts, ``gflops``, ``modes`` (one row per mode), ``stages``, training.
    """
    model, cfg = build(name, args)
    result = {"model": name, "weights": args.weights.get(name), **count(model)}
    result["score_thresh"] = cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST
    result["proposals"] = cfg.MODEL.RPN.POST_NMS_TOPK_TEST
    result["max_detections"] = cfg.TEST.DETECTIONS_PER_IMAGE
    result["gflops"], result["gflops_parts"] = (
        (None, None) if args.no_flops else gflops(model, [inputs[0]])
    )
    with tempfile.TemporaryDirectory() as folder:
        result["modes"] = [run_mode(m, model, inputs, args, folder) for m in args.modes]
    if args.stages:
        result["stages"] = time_stages(model, inputs, args.runs, args.device)
    if args.profile:
        result["profile"] = profile_model(model, inputs, train_batch)
    if args.train_iters:
        train, loss = time_training(
            model, train_batch, args.device, args.train_warmup, args.train_iters
        )
        result.update(train_s=train, train_median=statistics.median(train), last_train_loss=loss)
    return result


def markdown(results):
    """The results table; ratios are against mask_rcnn_R50 in the same mode ("n/a" without)."""
    base = next((r for r in results if r["model"] == BASELINE), None)
    lines = [
        f"| model | mode | detections | GFLOPs | {MEASURE_COLUMNS} | speed-up vs R50 | "
        "train s/iter | train ratio vs R50 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r, m, flops, cells, speed in table_rows(results, BASELINE):
        train = ratio = ""
        if m["mode"] == "eager" and "train_median" in r:
            train = f"{r['train_median']:.3f}"
            if base and "train_median" in base:
                ratio = f"{base['train_median'] / r['train_median']:.2f}x"
        lines.append(
            f"| {r['model']} | {m['mode']} | {m['detections_median']:g} | {flops} | {cells} | "
            f"{speed} | {train} | {ratio} |"
        )
    return "\n".join(lines)


def parts_markdown(results, key, fmt):
    """One row per model of a dict of per-part numbers (``stages`` or ``gflops_parts``)."""
    rows = [r for r in results if r.get(key)]
    if not rows:
        return ""
    names = list(rows[0][key])
    lines = ["| model | " + " | ".join(names) + " | sum |", "|---|" + "---:|" * (len(names) + 1)]
    for r in rows:
        values = [r[key][n] for n in names]
        lines.append(
            f"| {r['model']} | "
            + " | ".join(fmt.format(v) for v in values)
            + f" | {fmt.format(sum(values))} |"
        )
    return "\n".join(lines)


def main(argv=None):
    """Benchmark the chosen variants and print (and optionally save) the results."""
    args = parse_args(argv)
    quiet_warnings()
    if args.threads:
        torch.set_num_threads(args.threads)
    command = " ".join(sys.argv)
    info = machine()
    image, masks, source = load_slice(args.size, args.image)
    single, train_input = make_inputs(image, masks)
    if args.images:
        files = list_images(args.images)
        inputs = [slice_input(s, args.device) for s in read_slices(files, args.size)]
        source = f"{len(files)} slices of {args.images} (cycled); training: {source}"
    else:
        inputs = [{**single, "image": single["image"].to(args.device)}]
    train_input["image"] = train_input["image"].to(args.device)
    results = []
    progress = tqdm(args.models, desc="models", unit="model")
    for name in progress:
        progress.set_postfix_str(name)
        results.append(benchmark(name, args, inputs, [train_input] * args.batch))
    progress.close()
    info["load_average_after"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    header = (
        f"{info['date']} | {info['cpu']} ({info['cpu_count']} cores) | device {args.device}"
        f"{' (' + info['cuda'] + ')' if args.device.startswith('cuda') else ''} | torch "
        f"{info['torch']}, {info['torch_threads']} threads | load average before "
        f"{info['load_average']}, after {info['load_average_after']} | size {args.size} | "
        f"runs {args.runs} (warm-up {args.warmup}), throughput batch {args.throughput_batch} | "
        f"train batch {args.batch}, iters {args.train_iters} (warm-up {args.train_warmup}) | "
        f"score thresh {sorted({r['score_thresh'] for r in results})}, proposals "
        f"{sorted({r['proposals'] for r in results})}, at most "
        f"{sorted({r['max_detections'] for r in results})} detections | opts {args.opts} | weights "
        f"{args.weights or 'random (seed 0)'} | input: {source} | command: `{command}`"
    )
    print(header + "\n")
    print(markdown(results))
    if args.stages:
        print("\nmedian seconds per stage, optimized mode:\n")
        print(parts_markdown(results, "stages", "{:.4f}"))
    if args.profile:
        print("\nprofile, top operators by self CPU time:" + profile_markdown(results))
    if not args.no_flops:
        print("\nfvcore GFLOPs per part (eager model, first slice):\n")
        print(parts_markdown(results, "gflops_parts", "{:.2f}"))
    diverged = [r["model"] for r in results if not np.isfinite(r.get("last_train_loss", 0.0))]
    if diverged:
        print(f"warning: non-finite training loss for {', '.join(diverged)}")
    if args.json:
        meta = {**info, "command": command, "input": source, "args": vars(args)}
        write_json_atomic({"meta": meta, "models": results}, args.json, overwrite=args.overwrite)
        print(f"raw numbers written to {args.json}")
