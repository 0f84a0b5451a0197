"""The baseline a user would pick instead: MONAI's 2D U-Net, trained on the Mask R-CNN recipe's
slices for a wall-clock budget and scored with the lesion evaluator's Dice code.

An optional benchmark extra: MONAI is imported only here, inside the functions, and is not a
dependency of the package (``pip install -r requirements-bench.txt``).

What is shared with the Mask R-CNN recipe (``configs/mask_rcnn_R18_T1_FPN1_realct_cpu.yaml`` by
default): the training records of ``DATASETS.TRAIN`` with its filters, the per-source sampling
of ``DATALOADER.CT_DATASET_REPEAT``, the batch size, the seeded resumable loader, and the
``CTLesionDatasetMapper`` with every augmentation of the config (scale jitter around 512 px, so
the 256 px slices are upsampled; flips on both axes, rotations, intensity jitter). The target is
the union of the instance masks. Validation slices (``DATASETS.TEST``) go through the inference
mapper (512 px), the sigmoid is resized back to the record's size, thresholded at
``TEST.CT_LESION_EVAL.SCORE_THRESH`` and its 8-connected components are the predicted lesions,
scored by ``slice_lesion_counts`` and ``lesion_metrics`` as ``CTLesionEvaluator`` scores
Mask R-CNN's instances.

Training: Adam, learning rate on a cosine of the fraction of the budget spent, MONAI's
``DiceCELoss`` (soft Dice pooled over the batch plus binary cross-entropy on the logit). The
budget counts the training loop (data and steps) and carries over ``--resume``.
"""

import logging
import math
import os
import time
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.data import DatasetCatalog
from detectron2.structures import ImageList
from tabulate import tabulate

from ..data.build import build_resumable_train_loader
from ..data.mappers import CTLesionDatasetMapper
from ..engine.checkpoint import AtomicDetectionCheckpointer
from ..evaluation.lesion_evaluation import (
    PER_SLICE_FILE,
    annotation_rles,
    connected_instances,
    encode_masks,
    lesion_metrics,
    slice_lesion_counts,
    write_lesion_results,
)
from ..model_zoo import get_config
from ..utils.files import write_json_atomic

__all__ = [
    "build_unet",
    "evaluate_unet",
    "run_unet_baseline",
    "train_unet",
    "unet_batch",
    "unet_probability",
]

logger = logging.getLogger(__name__)

DEFAULT_CONFIG = "mask_rcnn_R18_T1_FPN1_realct_cpu.yaml"
RESULTS_FILE = "unet_results.json"
CHECKPOINT_NAME = "model_last"
TABLE_KEYS = (
    "dice",
    "dice_per_slice",
    "pixel_precision",
    "pixel_recall",
    "lesion_sensitivity",
    "lesion_precision",
)


def _import_monai():
    try:
        import monai
    except ImportError as e:
        raise ImportError(
            "the U-Net baseline needs MONAI, an optional benchmark extra: "
            "pip install -r requirements-bench.txt"
        ) from e
    return monai


def build_unet(channels=(16, 32, 64, 128, 256), num_res_units=2):
    """MONAI's 2D U-Net: one grey input channel, one logit, instance norm (batch 2).

    Args:
        channels (tuple[int]): features per level; each level after the first halves the size.
        num_res_units (int): residual units per level.

    Returns:
        torch.nn.Module
    """
    monai = _import_monai()
    return monai.networks.nets.UNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=1,
        channels=tuple(channels),
        strides=(2,) * (len(channels) - 1),
        num_res_units=num_res_units,
        norm="instance",
    )


def _divisibility(model):
    return 2 ** len(model.strides)


def unet_batch(batch, size_divisibility):
    """Images and union-of-instance targets of mapped training records, padded to one size.

    Args:
        batch (list[dict]): ``CTLesionDatasetMapper`` outputs (``image`` CxHxW 0-255,
            ``instances`` with bitmask ``gt_masks``).
        size_divisibility (int): padded sizes are multiples of it.

    Returns:
        tuple[Tensor, Tensor]: (B, 1, H, W) images in [0, 1] and 0/1 targets.
    """
    images, targets = [], []
    for d in batch:
        image = d["image"][:1].float() / 255.0
        target = torch.zeros(image.shape, dtype=torch.float32)
        instances = d.get("instances")
        if instances is not None and len(instances):
            target[0] = instances.gt_masks.tensor.any(dim=0).float()
        images.append(image)
        targets.append(target)
    return (
        ImageList.from_tensors(images, size_divisibility).tensor,
        ImageList.from_tensors(targets, size_divisibility).tensor,
    )


@torch.no_grad()
def unet_probability(model, image, height, width, device="cpu"):
    """The lesion probability of one mapped slice at the size of its record.

    Args:
        model (torch.nn.Module): a U-Net from ``build_unet`` in eval mode.
        image (Tensor): CxHxW 0-255, the inference mapper's image.
        height, width (int): the record's size.

    Returns:
        np.ndarray: (height, width) float32 probabilities.
    """
    x = ImageList.from_tensors([image[:1].float() / 255.0], _divisibility(model))
    logits = model(x.tensor.to(device))[..., : image.shape[1], : image.shape[2]]
    prob = F.interpolate(
        torch.sigmoid(logits), size=(height, width), mode="bilinear", align_corners=False
    )
    return prob[0, 0].cpu().numpy()


def evaluate_unet(model, cfg, dataset_names, output_dir=None, device="cpu"):
    """Score the U-Net on each dataset with the lesion evaluator's rules.

    Args:
        cfg (CfgNode): gives the inference mapper and ``TEST.CT_LESION_EVAL``.
        dataset_names (Iterable[str]): ``DatasetCatalog`` names with annotations.
        output_dir (str or None): per-slice JSON under ``inference/<name>/`` when given.

    Returns:
        OrderedDict: ``{name: {"lesion": metrics}}``.
    """
    thresh, iou = cfg.TEST.CT_LESION_EVAL.SCORE_THRESH, cfg.TEST.CT_LESION_EVAL.LESION_IOU_THRESH
    mapper = CTLesionDatasetMapper(cfg, False)
    model.eval()
    results = OrderedDict()
    for name in dataset_names:
        slices = []
        for record in DatasetCatalog.get(name):
            height, width = record["height"], record["width"]
            prob = unet_probability(model, mapper(record)["image"], height, width, device)
            counts = slice_lesion_counts(
                encode_masks(connected_instances(prob >= thresh)),
                annotation_rles(record.get("annotations", []), height, width),
                height,
                width,
                iou,
            )
            slices.append(
                {"image_id": record["image_id"], "file_name": record["file_name"], **counts}
            )
        metrics = lesion_metrics(slices)
        if output_dir:
            write_lesion_results(
                os.path.join(output_dir, "inference", name, PER_SLICE_FILE),
                metrics,
                slices,
                dataset=name,
                score_thresh=thresh,
                lesion_iou_thresh=iou,
                model="monai UNet",
            )
        results[name] = OrderedDict(lesion=metrics)
    return results


def _cosine_lr(base_lr, fraction):
    return base_lr * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, fraction))))


def _train_step(model, loss_fn, optimizer, batch, lr, device):
    images, targets = unet_batch(batch, _divisibility(model))
    loss = loss_fn(model(images.to(device)), targets.to(device))
    value = float(loss.detach())
    if not math.isfinite(value):
        raise FloatingPointError(f"U-Net loss became {value}; no step or checkpoint followed")
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return value


def train_unet(
    model,
    cfg,
    output_dir,
    *,
    minutes,
    resume=False,
    max_iter=None,
    base_lr=1e-3,
    checkpoint_minutes=5.0,
    log_period=20,
    device="cpu",
):
    """Train for ``minutes`` of wall clock (or ``max_iter`` iterations, if fewer), with a
    checkpoint every ``checkpoint_minutes`` and at the end.

    Args:
        cfg (CfgNode): gives the training data, the mapper and ``SOLVER.IMS_PER_BATCH``.
        output_dir (str): checkpoints (``model_last.pth``, ``last_checkpoint``).
        minutes (float): the budget of the whole run, resumed parts included.
        resume (bool): continue from the checkpoint in ``output_dir`` (its iteration, its
            minutes spent, the optimizer, the data order).

    Returns:
        dict: ``iterations``, ``train_minutes``, ``seconds_per_iter`` (of this call),
        ``last_loss``.
    """
    loss_fn = _import_monai().losses.DiceCELoss(sigmoid=True, batch=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=base_lr, weight_decay=1e-5)
    checkpointer = AtomicDetectionCheckpointer(model, output_dir, optimizer=optimizer)
    extra = {}
    if resume and checkpointer.has_checkpoint():
        extra = checkpointer.load(checkpointer.get_checkpoint_file())
        logger.info(
            "Resuming at iteration %d, %.1f min spent", extra["iteration"], extra["elapsed_s"] / 60
        )
    start_iter, spent = int(extra.get("iteration", 0)), float(extra.get("elapsed_s", 0.0))
    loader = build_resumable_train_loader(cfg, mapper=CTLesionDatasetMapper(cfg, True))
    loader.set_start_iter(start_iter)
    budget, iteration, last_loss = 60.0 * minutes, start_iter, math.nan
    last_save = time.perf_counter()
    origin = last_save - spent
    model.train()
    for batch in loader:
        now = time.perf_counter() - origin
        if now >= budget or (max_iter is not None and iteration >= max_iter):
            break
        lr = _cosine_lr(base_lr, now / budget)
        last_loss = _train_step(model, loss_fn, optimizer, batch, lr, device)
        iteration += 1
        if iteration % log_period == 0:
            logger.info(
                "iter %d  loss %.4f  lr %.2e  %.1f / %.1f min",
                iteration,
                last_loss,
                lr,
                now / 60,
                minutes,
            )
        if time.perf_counter() - last_save >= 60.0 * checkpoint_minutes:
            checkpointer.save(
                CHECKPOINT_NAME, iteration=iteration, elapsed_s=time.perf_counter() - origin
            )
            last_save = time.perf_counter()
    elapsed = time.perf_counter() - origin
    checkpointer.save(CHECKPOINT_NAME, iteration=iteration, elapsed_s=elapsed)
    done = iteration - start_iter
    return {
        "iterations": iteration,
        "train_minutes": elapsed / 60,
        "seconds_per_iter": (elapsed - spent) / done if done else math.nan,
        "last_loss": last_loss,
    }


def _table(results):
    rows = [
        [name] + [f"{res['lesion'][k]:.2f}" for k in TABLE_KEYS] for name, res in results.items()
    ]
    return tabulate(rows, headers=["dataset (percent)"] + list(TABLE_KEYS), tablefmt="pipe")


def run_unet_baseline(
    output_dir,
    *,
    config_file=DEFAULT_CONFIG,
    opts=(),
    minutes=60.0,
    resume=False,
    eval_only=False,
    max_iter=None,
    channels=None,
    num_res_units=2,
):
    """Train the U-Net baseline (unless ``eval_only``), score it on ``DATASETS.TEST``, print
    the table and write ``unet_results.json`` into ``output_dir``.

    Args:
        output_dir (str): checkpoints, results and per-slice JSON.
        config_file (str): the Mask R-CNN config whose data, sampling, augmentation, batch size
            and seed the U-Net uses.
        opts (list[str]): ``KEY VALUE`` overrides of that config.
        minutes (float): the training budget (wall clock, resumed parts included).
        resume (bool): continue training from the checkpoint in ``output_dir``.
        eval_only (bool): score the checkpoint in ``output_dir`` without training.
        max_iter (int or None): stop earlier after this many iterations (smoke runs, tests).
        channels (tuple[int] or None): U-Net features per level (None: ``build_unet``'s).

    Returns:
        dict: what ``unet_results.json`` holds.

    Raises:
        FileNotFoundError: ``eval_only`` and no checkpoint in ``output_dir``.
    """
    cfg = get_config(config_file, list(opts))
    device = "cuda" if cfg.MODEL.DEVICE.startswith("cuda") and torch.cuda.is_available() else "cpu"
    cfg.MODEL.DEVICE = device
    cfg.freeze()
    torch.manual_seed(max(cfg.SEED, 0))
    kwargs = {"num_res_units": num_res_units}
    if channels is not None:
        kwargs["channels"] = tuple(channels)
    model = build_unet(**kwargs).to(device)
    os.makedirs(output_dir, exist_ok=True)
    if eval_only:
        checkpointer = AtomicDetectionCheckpointer(model, output_dir)
        if not checkpointer.has_checkpoint():
            raise FileNotFoundError(f"{output_dir}: no U-Net checkpoint to evaluate; train first")
        training = checkpointer.load(checkpointer.get_checkpoint_file(), checkpointables=[])
        training = {
            "iterations": training.get("iteration"),
            "train_minutes": training.get("elapsed_s", math.nan) / 60,
        }
    else:
        training = train_unet(
            model, cfg, output_dir, minutes=minutes, resume=resume, max_iter=max_iter, device=device
        )
    results = evaluate_unet(model, cfg, cfg.DATASETS.TEST, output_dir, device)
    summary = {
        "model": "monai.networks.nets.UNet (2D, 1 channel in, 1 logit out)",
        "unet": {"channels": list(model.channels), "num_res_units": num_res_units},
        "config_file": os.path.basename(config_file),
        "opts": list(opts),
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "score_thresh": cfg.TEST.CT_LESION_EVAL.SCORE_THRESH,
        "lesion_iou_thresh": cfg.TEST.CT_LESION_EVAL.LESION_IOU_THRESH,
        "units": "percent",
        **training,
        "results": {name: dict(res["lesion"]) for name, res in results.items()},
    }
    clean = _json_safe(summary)
    write_json_atomic(clean, os.path.join(output_dir, RESULTS_FILE), overwrite=True)
    print(
        f"MONAI U-Net, {training['iterations']} iterations, "
        f"{training['train_minutes']:.1f} min of training:\n{_table(results)}"
    )
    return clean


def _json_safe(obj):
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return None if math.isnan(obj) else float(obj)
    return obj
