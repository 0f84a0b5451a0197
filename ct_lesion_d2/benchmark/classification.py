"""Benchmark the COVID-CT-Mask-Net classifiers, and a CT volume through segmenter + classifier.

The command line of ``tools/benchmark_classifier.py``:

    python tools/benchmark_classifier.py --images ../shared/data/medseg100/images \\
        --segmentation-weights output/.../model_final.pth --json bench_cls.json
    python tools/benchmark_classifier.py --models classifier_R18_T1 --volume-slices 0
    python tools/benchmark_classifier.py --models --volume-runs eager:1 optimized:4 onnxruntime:1:2

Part 1, per classifier variant and mode (``eager``, ``optimized``, ``torchscript``,
``onnxruntime``; see ``ct_lesion_d2.benchmark.segmentation``): latency median and p90 of one
slice, throughput, peak memory and fvcore GFLOPs. Module S is randomly initialised (seed 0);
the detector of the variants named in ``--segmentation-weights`` (default: classifier_R18_T1
only) is loaded from that segmentation checkpoint, the others keep random detectors.

Part 2, the volume: ``--volume-slices`` slices (``--images`` cycled; 300 by default, a chest CT
volume) each go through the segmenter (``--segmenter``, the paper's config, with
``--segmentation-weights`` so that detection counts are realistic) and the classifier, in
batches of ``B`` slices per call for each ``MODE:B`` of ``--volume-runs``. Reports the total
seconds, detections, predicted classes, and whether every mode predicts the same classes and
detection counts as the first.
"""

import argparse
import collections
import copy
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import torch
from detectron2.modeling import build_model
from tqdm import tqdm

from ..export import ExportedClassifier, export_classifier
from ..model_zoo import CLASSIFIER_VARIANTS, SEGMENTATION_VARIANTS, get_config
from ..modeling.meta_arch import load_model_weights
from ..utils.files import write_json_atomic
from .measure import (
    IN_PROCESS_MODES,
    MEASURE_COLUMNS,
    PeakMemory,
    count,
    gflops,
    in_process_runner,
    list_images,
    machine,
    measure,
    quiet_warnings,
    read_slices,
    slice_input,
    sync,
    table_rows,
)
from .segmentation import EXPORT_FORMAT, MODES, load_slice
from .segmentation import prepare as prepare_segmenter

BASELINE = "classifier_R50"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--models",
        nargs="*",
        default=list(CLASSIFIER_VARIANTS),
        choices=list(CLASSIFIER_VARIANTS),
        metavar="NAME",
        help="classifier variants for part 1 (default: all seven; none: only the volume)",
    )
    parser.add_argument("--modes", nargs="+", default=["eager", "optimized"], choices=MODES)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--size", type=int, default=512, help="slice side in pixels")
    parser.add_argument("--images", help="folder of real slices (default: one synthetic slice)")
    parser.add_argument("--segmentation-weights", help="trained segmenter checkpoint")
    parser.add_argument(
        "--weighted-models",
        nargs="*",
        default=["classifier_R18_T1"],
        help="classifier variants whose detector loads --segmentation-weights",
    )
    parser.add_argument("--warmup", type=int, default=2, help="untimed inference runs")
    parser.add_argument("--runs", type=int, default=10, help="timed single-slice runs")
    parser.add_argument("--throughput-batch", type=int, default=4, help="slices per call")
    parser.add_argument("--no-flops", action="store_true", help="skip the fvcore flop count")
    parser.add_argument("--volume-slices", type=int, default=300, help="0: no volume")
    parser.add_argument(
        "--volume-runs",
        nargs="+",
        default=["eager:1", "optimized:1:2"],
        metavar="MODE:BATCH[:WORKERS]",
        help="volume passes: slices per call and threads each running whole calls with one "
        "PyTorch thread (default 1 worker using all PyTorch threads)",
    )
    parser.add_argument(
        "--segmenter", default="mask_rcnn_R18_T1", choices=list(SEGMENTATION_VARIANTS)
    )
    parser.add_argument(
        "--classifier",
        default="classifier_R18_T1",
        choices=list(CLASSIFIER_VARIANTS),
        help="classifier of the volume",
    )
    parser.add_argument("--json", help="also write the raw numbers to this file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json")
    args = parser.parse_args(argv)
    if args.json and os.path.exists(args.json) and not args.overwrite:
        parser.error(f"{args.json} exists; pass --overwrite to replace it")
    exported = [
        m for m in args.modes + [r.split(":")[0] for r in args.volume_runs] if m in EXPORT_FORMAT
    ]
    if args.device.startswith("cuda") and exported:
        parser.error(
            f"{' '.join(sorted(set(exported)))} run on the CPU here; on CUDA use the "
            "eager and optimized modes"
        )
    if args.segmentation_weights and not os.path.isfile(args.segmentation_weights):
        parser.error(f"--segmentation-weights {args.segmentation_weights}: not found")
    runs = []
    for item in args.volume_runs:
        mode, *numbers = item.split(":")
        if (
            mode not in MODES
            or not 1 <= len(numbers) <= 2
            or not all(n.isdigit() and int(n) >= 1 for n in numbers)
        ):
            parser.error(
                f"--volume-runs {item}: expected MODE:BATCH or MODE:BATCH:WORKERS, MODE one of "
                f"{MODES}, numbers >= 1"
            )
        runs.append((mode, int(numbers[0]), int(numbers[1]) if len(numbers) == 2 else 1))
    args.volume_runs = runs
    return args


def build_classifier(name, args):
    """A classifier variant (S seeded 0), its detector from the checkpoint when listed."""
    opts = ["MODEL.DEVICE", args.device]
    if args.segmentation_weights and name in args.weighted_models:
        opts += ["MODEL.CT_CLASSIFIER.SEGMENTATION_WEIGHTS", args.segmentation_weights]
    cfg = get_config(name, opts)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    load_model_weights(model, cfg)
    return model


def prepare_classifier(mode, model, example, folder):
    """``setup()`` of a classifier runner for ``mode`` and its grad-mode context."""
    if mode in IN_PROCESS_MODES:
        return in_process_runner(mode, model)
    fmt = EXPORT_FORMAT[mode]
    prefix = os.path.join(folder, "classifier")
    export_classifier(model, example["image"].cpu(), fmt, prefix, overwrite=True)
    return (lambda: ExportedClassifier(prefix, fmt)), torch.no_grad


def benchmark(name, args, inputs):
    """All modes of one classifier variant and its FLOPs."""
    model = build_classifier(name, args)
    result = {"model": name, **count(model)}
    result["detector_weights"] = (
        args.segmentation_weights if name in args.weighted_models else None
    ) or None
    result["gflops"] = None if args.no_flops else gflops(model, [inputs[0]])[0]
    result["modes"] = []
    with tempfile.TemporaryDirectory() as folder:
        for mode in args.modes:
            setup, grad_mode = prepare_classifier(mode, model, inputs[0], folder)
            row, _ = measure(
                setup, grad_mode, inputs, args.runs, args.warmup, args.throughput_batch, args.device
            )
            result["modes"].append({"mode": mode, **row})
    return result


def volume(args, inputs):
    """Segment and classify ``--volume-slices`` slices for every ``--volume-runs`` pass."""
    seg_opts = ["MODEL.DEVICE", args.device, "MODEL.WEIGHTS", args.segmentation_weights or ""]
    seg_cfg = get_config(args.segmenter, seg_opts)
    segmenter = build_model(seg_cfg).eval()
    load_model_weights(segmenter, seg_cfg)
    args_cls = copy.copy(args)
    args_cls.weighted_models = [args.classifier]
    classifier = build_classifier(args.classifier, args_cls)
    slices = [inputs[i % len(inputs)] for i in range(args.volume_slices)]
    passes = []
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory() as folder:
        for mode, batch, workers in args.volume_runs:
            seg_setup, grad_mode = prepare_segmenter(mode, segmenter, slices[0], folder)
            cls_setup, _ = prepare_classifier(mode, classifier, slices[0], folder)
            chunks = [slices[i : i + batch] for i in range(0, len(slices), batch)]
            # several workers: each runs whole calls on one PyTorch (and ONNX Runtime) thread
            torch.set_num_threads(1 if workers > 1 else threads)
            try:
                with PeakMemory(args.device) as memory:
                    with grad_mode():
                        seg, cls = seg_setup(), cls_setup()

                    def process(chunk):
                        # only counts are kept: 300 slices of pasted masks would fill memory
                        with grad_mode():  # grad mode is per thread
                            detections = [len(o["instances"]) for o in seg(chunk)]
                            probs = [o["class_probs"].tolist() for o in cls(chunk)]
                            return detections, probs

                    process(chunks[0])  # warm-up
                    sync(args.device)
                    start = time.perf_counter()
                    with ThreadPoolExecutor(workers) as pool:
                        outputs = list(
                            tqdm(
                                pool.map(process, chunks),
                                total=len(chunks),
                                desc=f"volume {mode}:{batch}:{workers}",
                                leave=False,
                            )
                        )
                    sync(args.device)
                    seconds = time.perf_counter() - start
            finally:
                torch.set_num_threads(threads)
            passes.append(
                {
                    "mode": mode,
                    "batch": batch,
                    "workers": workers,
                    "seconds": seconds,
                    "seconds_per_slice": seconds / len(slices),
                    "peak_mib": memory.peak_mib,
                    "detections": [n for counts, _ in outputs for n in counts],
                    "class_probs": [p for _, probs in outputs for p in probs],
                }
            )
    first = passes[0]
    for p in passes:
        p["classes"] = [max(range(len(q)), key=q.__getitem__) for q in p["class_probs"]]
        p["max_class_prob_diff_to_first"] = max(
            abs(a - b)
            for qa, qb in zip(p["class_probs"], first["class_probs"])
            for a, b in zip(qa, qb)
        )
        p["same_detection_counts_as_first"] = sum(
            a == b for a, b in zip(p["detections"], first["detections"])
        )
        p["same_classes_as_first"] = sum(a == b for a, b in zip(p["classes"], first["classes"]))
    return {
        "slices": len(slices),
        "segmenter": args.segmenter,
        "classifier": args.classifier,
        "weights": args.segmentation_weights,
        "passes": passes,
    }


def markdown(results):
    lines = [
        f"| model | mode | detector | GFLOPs | {MEASURE_COLUMNS} | speed-up vs R50 |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r, m, flops, cells, speed in table_rows(results, BASELINE):
        detector = "trained" if r["detector_weights"] else "random"
        lines.append(f"| {r['model']} | {m['mode']} | {detector} | {flops} | {cells} | {speed} |")
    return "\n".join(lines)


def volume_markdown(vol):
    lines = [
        f"volume: {vol['slices']} slices, {vol['segmenter']} + {vol['classifier']}, weights "
        f"{vol['weights'] or 'random'}\n",
        "| mode | slices per call | workers | total (s) | s/slice | peak memory (MiB) | "
        "detections (sum) | classes (0/1/2) | same detection counts as first | same classes as "
        "first | largest class probability difference to first |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for p in vol["passes"]:
        classes = collections.Counter(p["classes"])
        lines.append(
            f"| {p['mode']} | {p['batch']} | {p['workers']} | {p['seconds']:.1f} | "
            f"{p['seconds_per_slice']:.3f} | "
            f"{p['peak_mib']:.0f} | {sum(p['detections'])} | "
            f"{classes[0]}/{classes[1]}/{classes[2]} | {p['same_detection_counts_as_first']}/"
            f"{vol['slices']} | {p['same_classes_as_first']}/{vol['slices']} | "
            f"{p['max_class_prob_diff_to_first']:.2g} |"
        )
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    quiet_warnings()
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine()
    command = " ".join(sys.argv)
    if args.images:
        files = list_images(args.images)
        inputs = [slice_input(s, args.device) for s in read_slices(files, args.size)]
        source = f"{len(files)} slices of {args.images} (cycled)"
    else:
        image, _, source = load_slice(args.size)
        inputs = [slice_input(image, args.device)]
    results = [benchmark(name, args, inputs) for name in tqdm(args.models, desc="classifiers")]
    vol = volume(args, inputs) if args.volume_slices > 0 else None
    info["load_average_after"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(
        f"{info['date']} | {info['cpu']} ({info['cpu_count']} cores) | device {args.device} | "
        f"torch {info['torch']}, {info['torch_threads']} threads | load average before "
        f"{info['load_average']}, after {info['load_average_after']} | runs {args.runs} "
        f"(warm-up {args.warmup}), throughput batch {args.throughput_batch} | detector weights "
        f"{args.segmentation_weights or 'random'} for {args.weighted_models} | input: {source} | "
        f"command: `{command}`\n"
    )
    if results:
        print(markdown(results))
    if vol:
        print("\n" + volume_markdown(vol))
        for p in vol["passes"]:
            print(
                f"volume {p['mode']}:{p['batch']}:{p['workers']}: {p['seconds']:.1f} s for "
                f"{vol['slices']} "
                f"slices (median detections {statistics.median(p['detections']):g})"
            )
    if args.json:
        meta = {**info, "command": command, "input": source, "args": vars(args)}
        record = {"meta": meta, "models": results, "volume": vol}
        write_json_atomic(record, args.json, overwrite=args.overwrite)
        print(f"raw numbers written to {args.json}")
