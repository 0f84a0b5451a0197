"""Measurements shared by the benchmarks (docs/BENCHMARKS.md): time, memory, FLOPs, sizes.

Latency is wall-clock time (``time.perf_counter``, CUDA synchronised), with the process CPU time
beside it (all threads; less sensitive to other work on the machine than wall-clock time, but
it counts threads that spin while waiting); memory is the peak of the
process RSS sampled every 2 ms (CUDA: ``torch.cuda.max_memory_allocated``) above its level at
the start of the measured block, after freed heap memory was returned to the system; FLOPs are
fvcore's count through Detectron2's ``FlopCountAnalysis`` (one fused multiply-add = one flop).
"""

import copy
import ctypes
import datetime
import gc
import os
import platform
import resource
import statistics
import threading
import time
import warnings

import numpy as np
import torch

# importing ct_lesion_d2.export also makes detectron2.export and its analysis importable
from ..data.io import DatasetFormatError
from ..data.readers import list_image_files, read_grey_image
from ..export import optimize_for_inference


def quiet_warnings():
    """Hide the expected tracer and deprecation warnings of Detectron2 0.6 under this torch."""
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="torch")


def sync(device):
    """Wait for queued CUDA work, so that wall-clock timings cover it."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def release_memory(device="cpu"):
    """Collect garbage and hand freed heap pages back to the system (glibc), so that RSS
    measured next starts from what is really in use."""
    gc.collect()
    if str(device).startswith("cuda"):
        torch.cuda.empty_cache()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _rss_bytes():
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: the process high-water mark (never decreases)
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakMemory:
    """Context manager measuring the peak memory of a block above its start, in MiB.

    CPU: RSS sampled every ``interval`` seconds in a thread. CUDA: allocated tensor memory.
    Read ``.peak_mib`` after the block.
    """

    def __init__(self, device="cpu", interval=0.002):
        self.device = str(device)
        self.interval = interval
        self.peak_mib = None

    def __enter__(self):
        release_memory(self.device)
        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
            return self
        self._base = self._peak = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, _rss_bytes())

    def __exit__(self, *exc):
        if self.device.startswith("cuda"):
            peak = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._thread.join()
            peak = max(self._peak, _rss_bytes())
        self.peak_mib = (peak - self._base) / 2**20
        return False


# Modes run on the model itself (the others load an exported file).
IN_PROCESS_MODES = ("eager", "optimized")


def in_process_runner(mode, model):
    """``(setup, grad_mode)`` of an in-process mode: ``eager`` runs a copy of ``model`` under
    ``torch.no_grad`` (the "before"), ``optimized`` a copy prepared by
    ``optimize_for_inference`` under ``torch.inference_mode``."""
    if mode == "eager":
        return (lambda: copy.deepcopy(model)), torch.no_grad
    if mode == "optimized":
        return (lambda: optimize_for_inference(copy.deepcopy(model))), torch.inference_mode
    raise ValueError(f"{mode!r} is not one of {IN_PROCESS_MODES}")


def time_calls(fn, batches, warmup, device):
    """Call ``fn(batch)`` for every batch after ``warmup`` untimed calls on the first ones.

    Returns:
        (list[float], list[float], list): wall-clock seconds of each timed call, the process
        CPU seconds (all threads) it used, and its return value.
    """
    for i in range(warmup):
        fn(batches[i % len(batches)])
    times, cpu_times, outputs = [], [], []
    for batch in batches:
        sync(device)
        start, cpu_start = time.perf_counter(), time.process_time()
        out = fn(batch)
        sync(device)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
        outputs.append(out)
    return times, cpu_times, outputs


def latency_stats(times, images_per_call=1):
    """Median and 90th percentile of per-call seconds, and images per second overall."""
    return {
        "median": statistics.median(times),
        "p90": float(np.percentile(times, 90)),
        "throughput": images_per_call * len(times) / sum(times),
    }


def measure(setup, grad_mode, inputs, runs, warmup, throughput_batch, device):
    """Build a runner and time it on single slices and on batches.

    The peak memory covers building the runner and the single-slice calls.

    Args:
        setup (callable): returns the runner, ``list[dict] -> list[dict]`` (measured for memory).
        grad_mode (callable): context manager to run in (``torch.no_grad``...).
        inputs (list[dict]): model inputs, cycled.
        runs (int): timed single-slice calls (after ``warmup`` untimed ones).
        throughput_batch (int): slices per call of the throughput measurement.

    Returns:
        (dict, list): statistics and raw seconds, and the outputs of the single-slice calls.
    """
    singles = [[inputs[i % len(inputs)]] for i in range(runs)]
    batches = [
        [inputs[(i * throughput_batch + j) % len(inputs)] for j in range(throughput_batch)]
        for i in range(max(1, runs // throughput_batch))
    ]
    with grad_mode():
        with PeakMemory(device) as memory:
            runner = setup()
            times, cpu_times, outputs = time_calls(runner, singles, warmup, device)
        batch_times, _, _ = time_calls(runner, batches, 0, device)  # warm from the singles
    row = {"inference_s": times, "cpu_s": cpu_times, "batch_s": batch_times}
    row["peak_mib"] = memory.peak_mib
    row.update({f"latency_{k}": v for k, v in latency_stats(times).items()})
    row["cpu_median"] = statistics.median(cpu_times)
    row["throughput"] = latency_stats(batch_times, throughput_batch)["throughput"]
    return row, outputs


MEASURE_COLUMNS = "latency median (s) | p90 (s) | CPU s | throughput (slices/s) | peak memory (MiB)"


def table_rows(results, baseline):
    """The Markdown cells shared by the benchmark tables, per (model result, mode row).

    Yields:
        tuple: the result, the mode row, its GFLOPs cell, the ``MEASURE_COLUMNS`` cells and the
        speed-up against ``baseline`` in the same mode ("n/a" without it).
    """
    base = next((r for r in results if r["model"] == baseline), None)
    base_modes = {m["mode"]: m for m in base["modes"]} if base else {}
    for r in results:
        flops = f"{r['gflops']:.1f}" if r["gflops"] is not None else "n/a"
        for m in r["modes"]:
            b = base_modes.get(m["mode"])
            speed = f"{b['latency_median'] / m['latency_median']:.2f}x" if b else "n/a"
            cells = (
                f"{m['latency_median']:.4f} | {m['latency_p90']:.4f} | "
                f"{m['cpu_median']:.3f} | {m['throughput']:.2f} | {m['peak_mib']:.0f}"
            )
            yield r, m, flops, cells, speed


# Parts of a Detectron2 R-CNN reported by ``gflops``: name -> (submodules added, subtracted).
FLOP_PARTS = {
    "resnet": (("backbone.bottom_up",), ()),
    "fpn": (("backbone",), ("backbone.bottom_up",)),
    "rpn": (("proposal_generator",), ()),
    "box_head": (("roi_heads.box_head", "roi_heads.box_predictor"), ()),
    "mask_head": (("roi_heads.mask_head",), ()),
}


def gflops(model, inputs):
    """fvcore GFLOPs (multiply-adds) of one eval-mode forward of ``model`` on ``inputs``.

    Returns:
        (float, dict[str, float]): the total and the GFLOPs of each part of ``FLOP_PARTS``.
    """
    from detectron2.utils.analysis import FlopCountAnalysis

    model.eval()
    with torch.no_grad():
        counter = FlopCountAnalysis(model, inputs)
        counter.unsupported_ops_warnings(False)
        counter.uncalled_modules_warnings(False)
        total, by_module = counter.total(), counter.by_module()

    # Detectron2 wraps the model in a TracingAdapter, whose attribute "model" prefixes the names
    def flops(name):
        return by_module.get(f"model.{name}", by_module.get(name, 0))

    parts = {
        part: (sum(map(flops, added)) - sum(map(flops, subtracted))) / 1e9
        for part, (added, subtracted) in FLOP_PARTS.items()
    }
    return total / 1e9, parts


def count(model):
    """Parameters, trainable parameters and state-dict elements (BatchNorm buffers included)."""
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "state_dict_elements": sum(t.numel() for t in model.state_dict().values()),
    }


def list_images(source):
    """Image files of a folder in natural order (or the one file given)."""
    if os.path.isfile(source):
        return [source]
    try:
        return list_image_files(source)
    except DatasetFormatError as e:
        raise SystemExit(str(e))


def slice_input(image, device="cpu"):
    """Detectron2 inference input for an HxW uint8 slice (grey replicated to 3 channels)."""
    tensor = torch.from_numpy(np.array(image, dtype=np.float32))[None].repeat(3, 1, 1)
    h, w = image.shape
    return {"image": tensor.to(device), "height": h, "width": w}


def read_slices(files, size):
    """Grey slices resized to ``size`` x ``size`` (no-op for the 512 x 512 medseg100 slices)."""
    from PIL import Image

    slices = []
    for path in files:
        image = read_grey_image(path)
        if image.shape != (size, size):
            image = np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))
        slices.append(image)
    return slices


def machine():
    """Date, CPU, threads and load: the header every benchmark prints with its numbers."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
