"""Where the time goes: inference stages, training iterations and the top operators.

Stage times come from one ordinary forward of the model (``GeneralizedRCNN.inference``), with
forward hooks marking the moment each stage ends; the hooks are removed after the call.
"""

import contextlib
import copy
import statistics
import time

import torch
from detectron2.utils.events import EventStorage

from ..export import optimize_for_inference
from .measure import sync

__all__ = [
    "STAGES",
    "profile_markdown",
    "profile_model",
    "profile_ops",
    "stage_marks",
    "time_stages",
    "time_training",
    "training_step",
]

# Inference stages of a Mask R-CNN, in order; each ends where the next begins.
STAGES = ("preprocess", "backbone", "rpn", "box_pooler", "box_head_nms", "mask", "paste")


@contextlib.contextmanager
def stage_marks(model, device):
    """Record ``(stage, end time)`` while the block runs one forward of ``model``.

    The stage ends are: the backbone's start (preprocess) and end, the RPN's end, the box
    pooler's end, the mask pooler's start (box head and NMS) and the RoI heads' end (mask
    head); "paste" ends when the call returns, which the caller marks.

    Yields:
        list[tuple[str, float]]: filled during the forward.
    """
    marks = []

    def mark(name):
        def hook(*_):
            sync(device)
            marks.append((name, time.perf_counter()))

        return hook

    heads = model.roi_heads
    handles = [
        model.backbone.register_forward_pre_hook(mark("preprocess")),
        model.backbone.register_forward_hook(mark("backbone")),
        model.proposal_generator.register_forward_hook(mark("rpn")),
        heads.box_pooler.register_forward_hook(mark("box_pooler")),
        heads.mask_pooler.register_forward_pre_hook(mark("box_head_nms")),
        heads.register_forward_hook(mark("mask")),
    ]
    try:
        yield marks
    finally:
        for handle in handles:
            handle.remove()


def time_stages(model, inputs, runs, device):
    """Median seconds of each inference stage of an optimised model (one slice per call).

    Returns:
        dict[str, float]: one entry per name of ``STAGES``.
    """
    model = optimize_for_inference(copy.deepcopy(model))
    stages = {name: [] for name in STAGES}
    with torch.inference_mode():
        for i in range(runs + 1):  # the first call is a warm-up
            with stage_marks(model, device) as marks:
                sync(device)
                start = time.perf_counter()
                model([inputs[i % len(inputs)]])
                sync(device)
                marks.append(("paste", time.perf_counter()))
            for name, end in marks:
                stages[name].append(end - start)
                start = end
    return {name: statistics.median(v[1:]) for name, v in stages.items()}


def training_step(model, batch):
    """Put ``model`` in training mode; returns a callable running one iteration on ``batch``
    (forward, backward and a plain SGD step, lr 0.001) and returning the total loss. Call it
    inside an ``EventStorage``, where Detectron2's heads log while training."""
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.001)

    def step():
        loss = sum(model(batch).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss

    return step


def time_training(model, batch, device, warmup, iters):
    """Seconds per training iteration (``training_step``).

    Returns:
        (list[float], float): timed seconds per iteration and the last total loss.
    """
    step = training_step(model, batch)
    times = []
    with EventStorage():
        for i in range(warmup + iters):
            sync(device)
            start = time.perf_counter()
            loss = step()
            sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return times, float(loss.detach())


def profile_ops(fn, top=8):
    """The ``top`` operators by self CPU time of one call of ``fn`` (torch.profiler).

    Returns:
        list[dict]: ``op``, ``self_cpu_s``, ``share`` of the profiled self CPU time, ``calls``.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    return [
        {
            "op": e.key,
            "self_cpu_s": e.self_cpu_time_total / 1e6,
            "share": e.self_cpu_time_total / total,
            "calls": e.count,
        }
        for e in events[:top]
    ]


def profile_model(model, inputs, train_batch):
    """Top operators of one optimised inference and one training iteration of ``model``."""
    optimized = optimize_for_inference(copy.deepcopy(model))
    with torch.inference_mode():
        optimized([inputs[0]])  # warm-up
        inference = profile_ops(lambda: optimized([inputs[0]]))
    step = training_step(model, train_batch)
    with EventStorage():
        step()  # warm-up
        training = profile_ops(step)
    model.eval()
    return {"inference": inference, "training": training}


def profile_markdown(results):
    """Top operators per model, for inference (optimized) and one training iteration."""
    lines = []
    for r in results:
        for kind, ops in r.get("profile", {}).items():
            lines.append(
                f"\n{r['model']}, {kind}: "
                + "; ".join(
                    f"{o['op']} {o['share']:.0%} ({o['self_cpu_s']:.3f} s, {o['calls']} calls)"
                    for o in ops
                )
            )
    return "\n".join(lines)
