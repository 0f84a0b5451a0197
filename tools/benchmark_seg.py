#!/usr/bin/env python
"""Benchmark inference latency and training speed of the segmentation variants.

    python tools/benchmark_seg.py                                    # all seven, 512 x 512
    python tools/benchmark_seg.py --models mask_rcnn_R18_T2 mask_rcnn_R50 --device cpu
    python tools/benchmark_seg.py --score-thresh 0.0 --json bench.json

Models are randomly initialised (``torch.manual_seed(0)``), so the detections that reach the
mask head depend on ``--score-thresh``; the input is one deterministic SYNTHETIC slice (or
``--image``). Prints a Markdown table; ``--json`` also writes the raw timings.
"""
import argparse
import datetime
import gc
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import pycocotools.mask as mask_util
import torch
from PIL import Image
from tqdm import tqdm

import ct_lesion_d2  # noqa: F401  (registers backbones; provides detectron2._C if missing)
from ct_lesion_d2.data.converters import TWO_LABEL_MERGED, mask_to_annotations
from ct_lesion_d2.data.io import read_grey_image, read_label_mask, write_json_atomic
from ct_lesion_d2.data.synthetic import generate_synthetic_slices
from ct_lesion_d2.model_zoo import SEGMENTATION_VARIANTS, get_config
from detectron2.modeling import build_model
from detectron2.structures import BitMasks, Boxes, Instances
from detectron2.utils.events import EventStorage

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from count_params import count  # noqa: E402

BASELINE = "mask_rcnn_R50"


def parse_args(argv=None):
    """Parse and check the command line; refuses an existing ``--json`` without ``--overwrite``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--models",
        nargs="+",
        default=list(SEGMENTATION_VARIANTS),
        choices=list(SEGMENTATION_VARIANTS),
        metavar="NAME",
        help="variants to run (default: all seven)",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=512, help="slice side in pixels")
    parser.add_argument("--image", help="grey slice to use instead of a synthetic one")
    parser.add_argument("--warmup", type=int, default=2, help="untimed inference runs")
    parser.add_argument("--runs", type=int, default=10, help="timed inference runs")
    parser.add_argument(
        "--score-thresh",
        type=float,
        default=None,
        help="MODEL.ROI_HEADS.SCORE_THRESH_TEST (default: the config's)",
    )
    parser.add_argument("--batch", type=int, default=2, help="training images per iteration")
    parser.add_argument("--train-warmup", type=int, default=1, help="untimed training iters")
    parser.add_argument("--train-iters", type=int, default=5, help="timed training iterations")
    parser.add_argument("--json", help="also write the raw numbers to this file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.train_iters < 1 or args.batch < 1 or args.size < 128:
        parser.error("need --runs, --train-iters, --batch >= 1 and --size >= 128")
    if args.json and os.path.exists(args.json) and not args.overwrite:
        parser.error(f"{args.json} exists; pass --overwrite to replace it")
    return args


def load_slice(size, image_path=None):
    """The benchmark slice and its lesion instances.

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
    image = read_grey_image(image_path)
    source = f"{image_path} ({image.shape[1]}x{image.shape[0]})"
    if image.shape != (size, size):
        image = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))
    # No mask for a given image: one elliptical lesion where the image-left lung usually is.
    yy, xx = np.mgrid[:size, :size] / size
    masks = (((xx - 0.3) / 0.08) ** 2 + ((yy - 0.45) / 0.12) ** 2 < 1.0)[None]
    return image, masks, f"{source}, 1 synthetic ellipse lesion"


def make_inputs(image, masks):
    """Detectron2 input dicts: inference (no instances) and training (with ground truth)."""
    tensor = torch.from_numpy(np.array(image)).float()[None].repeat(3, 1, 1)
    h, w = image.shape
    gt = Instances((h, w))
    bitmasks = BitMasks(torch.from_numpy(masks))
    gt.gt_boxes = Boxes(bitmasks.get_bounding_boxes().tensor)
    gt.gt_classes = torch.zeros(len(masks), dtype=torch.int64)
    gt.gt_masks = bitmasks
    return {"image": tensor, "height": h, "width": w}, {"image": tensor, "instances": gt}


def _sync(device):
    """Wait for queued CUDA work, so that wall-clock timings cover it."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_inference(model, inputs, device, warmup, runs):
    """Time ``model([inputs])`` in eval mode under ``torch.no_grad()``.

    Returns:
        (list[float], list[int]): seconds of each timed run and its number of detections.
    """
    model.eval()
    times, detections = [], []
    with torch.no_grad():
        for i in range(warmup + runs):
            _sync(device)
            start = time.perf_counter()
            outputs = model([inputs])
            _sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
                detections.append(len(outputs[0]["instances"]))
    return times, detections


def time_training(model, batch, device, warmup, iters):
    """Seconds per training iteration: forward, backward and a plain SGD step (lr 0.001).

    Returns:
        (list[float], float): timed seconds per iteration and the last total loss.
    """
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.001)
    times = []
    with EventStorage():  # Detectron2's heads log to the current storage while training
        for i in range(warmup + iters):
            _sync(device)
            start = time.perf_counter()
            losses = model(batch)
            loss = sum(losses.values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            _sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    del optimizer
    return times, float(loss.detach())


def benchmark(name, args, inputs, batch):
    """Build one variant (seed 0), time inference and training, then free it.

    Returns:
        dict: parameter counts (``count``), raw timings, medians, p90 and detection counts.
    """
    cfg = get_config(name, ["MODEL.DEVICE", args.device])
    if args.score_thresh is not None:
        cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = args.score_thresh
    torch.manual_seed(0)
    model = build_model(cfg)
    infer, dets = time_inference(model, inputs, args.device, args.warmup, args.runs)
    train, loss = time_training(model, batch, args.device, args.train_warmup, args.train_iters)
    row = {"model": name, **count(model), "score_thresh": cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST}
    row.update(inference_s=infer, detections=dets, train_s=train, last_train_loss=loss)
    row["inference_median"] = statistics.median(infer)
    row["inference_p90"] = float(np.percentile(infer, 90))
    row["train_median"] = statistics.median(train)
    del model
    gc.collect()
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
    return row


def markdown(rows):
    """The results table; ratio columns are "n/a" unless mask_rcnn_R50 was benchmarked."""
    base = next((r for r in rows if r["model"] == BASELINE), None)
    lines = [
        "| model | params (M) | inference median (s) | inference p90 (s) | speed-up vs R50 | "
        "train s/iter | train ratio vs R50 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        speed = f"{base['inference_median'] / r['inference_median']:.2f}x" if base else "n/a"
        ratio = f"{base['train_median'] / r['train_median']:.2f}x" if base else "n/a"
        lines.append(
            f"| {r['model']} | {r['params'] / 1e6:.2f} | {r['inference_median']:.4f} | "
            f"{r['inference_p90']:.4f} | {speed} | {r['train_median']:.4f} | {ratio} |"
        )
    return "\n".join(lines)


def main(argv=None):
    """Benchmark the chosen variants and print (and optionally save) the results."""
    args = parse_args(argv)
    command = " ".join(sys.argv)
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    image, masks, source = load_slice(args.size, args.image)
    inputs, train_input = make_inputs(image, masks)
    batch = [train_input] * args.batch
    rows = []
    progress = tqdm(args.models, desc="models", unit="model")
    for name in progress:
        progress.set_postfix_str(name)
        rows.append(benchmark(name, args, inputs, batch))
    progress.close()
    thresh = ", ".join(map(str, sorted({r["score_thresh"] for r in rows})))
    thresh += " (--score-thresh)" if args.score_thresh is not None else " (config)"
    device = args.device
    if device.startswith("cuda"):
        device += f" ({torch.cuda.get_device_name(torch.device(device))})"
    header = (
        f"{date} | device {device} | torch {torch.__version__} | threads "
        f"{torch.get_num_threads()} | size {args.size} | runs {args.runs} (warmup {args.warmup})"
        f" | train batch {args.batch}, iters {args.train_iters} (warmup {args.train_warmup})"
        f" | score thresh {thresh} | input: {source} | command: `{command}`"
    )
    print(header + "\n")
    print(markdown(rows))
    dets = ", ".join(f"{r['model']} {statistics.median(r['detections']):g}" for r in rows)
    print(f"\nmedian detections per inference (untrained models): {dets}")
    diverged = [r["model"] for r in rows if not np.isfinite(r["last_train_loss"])]
    if diverged:
        print(f"warning: non-finite training loss for {', '.join(diverged)}")
    if args.json:
        meta = {
            "date": date,
            "device": device,
            "torch": torch.__version__,
            "command": command,
            "threads": torch.get_num_threads(),
            "input": source,
            "args": vars(args),
        }
        write_json_atomic({"meta": meta, "models": rows}, args.json, overwrite=args.overwrite)
        print(f"raw numbers written to {args.json}")


if __name__ == "__main__":
    main()
