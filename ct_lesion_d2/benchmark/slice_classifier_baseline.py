"""The slice classifiers a user would pick instead of COVID-CT-Mask-Net, trained side by side.

A torchvision ResNet18 or DenseNet-121, from random initialisation (``weights=None``), on the
classifier config's training slices in the classifier's input form: the grey slice read by
``ClassificationDatasetMapper`` (so resized by ``INPUT.MIN_SIZE_*`` / ``MAX_SIZE_*`` and
augmented by ``INPUT.RANDOM_FLIP`` and ``INPUT.CT_AUGMENTATION``), replicated to 3 channels and
normalised by ``MODEL.PIXEL_MEAN`` / ``PIXEL_STD``. Training stops after a wall-clock budget;
each of ``DATASETS.TEST`` is then evaluated once by ``CTClassificationEvaluator``.
"""

import logging
import os
import time

import torch
import torchvision
from detectron2.data import (
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.data.samplers import TrainingSampler
from detectron2.evaluation import inference_on_dataset
from detectron2.structures import ImageList
from tabulate import tabulate
from torch import nn
from torch.nn import functional as F

from ..data.mappers import ClassificationDatasetMapper
from ..evaluation import CTClassificationEvaluator
from ..utils.files import write_json_atomic

__all__ = ["BASELINE_ARCHS", "SliceClassifierBaseline", "train_slice_classifier_baseline"]

logger = logging.getLogger(__name__)

BASELINE_ARCHS = {
    "resnet18": torchvision.models.resnet18,
    "densenet121": torchvision.models.densenet121,
}


class SliceClassifierBaseline(nn.Module):
    """A torchvision classifier with the calling convention of ``CTMaskNetClassifier``.

    Takes Detectron2's ``list[dict]`` with ``"image"`` (3, H, W) 0-255 and, in training,
    ``"class_id"``; returns ``{"loss_cls_image"}`` (softmax cross-entropy) in training, else per
    image ``class_logits``, ``class_probs`` (softmax) and ``pred_class``. Images of different
    sizes are zero-padded after normalisation, as Detectron2's ``ImageList`` does, and the
    network's global pooling makes the output size-independent.
    """

    def __init__(self, arch, num_classes, pixel_mean, pixel_std):
        """
        Args:
            arch (str): a key of ``BASELINE_ARCHS``.
            num_classes (int): slice classes.
            pixel_mean, pixel_std (Sequence[float]): per-channel normalisation (0-255 units).
        """
        super().__init__()
        if arch not in BASELINE_ARCHS:
            raise ValueError(f"arch must be one of {list(BASELINE_ARCHS)}, got {arch!r}")
        self.arch = arch
        self.net = BASELINE_ARCHS[arch](weights=None, num_classes=num_classes)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @property
    def device(self):
        return self.pixel_mean.device

    def forward(self, batched_inputs):
        images = [
            (x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs
        ]
        logits = self.net(ImageList.from_tensors(images, 32).tensor)
        if self.training:
            targets = torch.as_tensor([x["class_id"] for x in batched_inputs], device=self.device)
            return {"loss_cls_image": F.cross_entropy(logits, targets.long())}
        probs = F.softmax(logits, dim=1)
        return [
            {"class_logits": lg, "class_probs": p, "pred_class": lg.argmax()}
            for lg, p in zip(logits, probs)
        ]


def train_slice_classifier_baseline(
    cfg,
    arch,
    minutes,
    output_dir,
    *,
    lr=1e-3,
    weight_decay=1e-4,
    batch_size=None,
    max_iter=None,
    log_period=20,
):
    """Train a baseline on ``cfg.DATASETS.TRAIN`` for ``minutes``, then evaluate it.

    Args:
        cfg (CfgNode): a classifier config: its ``INPUT``, ``DATASETS``, ``MODEL.PIXEL_*``,
            ``MODEL.CT_CLASSIFIER.NUM_CLASSES``, ``DATALOADER.NUM_WORKERS`` and ``SEED``
            (``SOLVER.IMS_PER_BATCH`` unless ``batch_size``) are used.
        arch (str): ``"resnet18"`` or ``"densenet121"``.
        minutes (float): wall-clock training budget, data loading included, evaluation not.
        output_dir (str): gets ``model_final.pth``, ``baseline_results.json`` and the
            evaluator's files under ``inference/<dataset>/``.
        lr, weight_decay (float): AdamW settings (constant learning rate).
        batch_size (int or None): slices per iteration.
        max_iter (int or None): also stop after this many iterations (tests).
        log_period (int): iterations between log lines.

    Returns:
        dict: the contents of ``baseline_results.json`` (``training`` and, per test dataset,
        the evaluator's metrics in percent).
    """
    os.makedirs(output_dir, exist_ok=True)
    torch.manual_seed(max(cfg.SEED, 0))
    device = torch.device(cfg.MODEL.DEVICE)
    model = SliceClassifierBaseline(
        arch, cfg.MODEL.CT_CLASSIFIER.NUM_CLASSES, cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD
    ).to(device)
    batch_size = batch_size or cfg.SOLVER.IMS_PER_BATCH
    training = _train_for(model, cfg, minutes, lr, weight_decay, batch_size, max_iter, log_period)
    torch.save(
        {"model": model.state_dict(), "arch": arch}, os.path.join(output_dir, "model_final.pth")
    )
    results = {"arch": arch, "training": training, "metrics": {}}
    for name in cfg.DATASETS.TEST:
        loader = build_detection_test_loader(
            cfg, name, mapper=ClassificationDatasetMapper(cfg, False)
        )
        evaluator = CTClassificationEvaluator(
            name, os.path.join(output_dir, "inference", name), distributed=False
        )
        results["metrics"][name] = inference_on_dataset(model, loader, evaluator)["classification"]
    write_json_atomic(
        _json_safe(results), os.path.join(output_dir, "baseline_results.json"), overwrite=True
    )
    return results


def _train_for(model, cfg, minutes, lr, weight_decay, batch_size, max_iter, log_period):
    """The training loop; returns what it did (iterations, slices, seconds, final loss)."""
    dataset = get_detection_dataset_dicts(cfg.DATASETS.TRAIN, filter_empty=False)
    loader = build_detection_train_loader(
        dataset=dataset,
        mapper=ClassificationDatasetMapper(cfg, True),
        sampler=TrainingSampler(len(dataset), seed=max(cfg.SEED, 0)),
        total_batch_size=batch_size,
        aspect_ratio_grouping=False,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    model.train()
    start, iteration, loss = time.perf_counter(), 0, float("nan")
    for batch in loader:
        loss_tensor = model(batch)["loss_cls_image"]
        optimizer.zero_grad()
        loss_tensor.backward()
        optimizer.step()
        iteration, loss = iteration + 1, float(loss_tensor.detach())
        elapsed = time.perf_counter() - start
        if iteration % log_period == 0:
            logger.info("iter %d  loss %.4f  %.1f s", iteration, loss, elapsed)
        if elapsed >= 60.0 * minutes or (max_iter is not None and iteration >= max_iter):
            break
    seconds = time.perf_counter() - start
    return {
        "minutes_budget": minutes,
        "seconds": seconds,
        "iterations": iteration,
        "slices_seen": iteration * batch_size,
        "epochs": iteration * batch_size / len(dataset),
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "final_loss": loss,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def results_table(results, dataset_names):
    """A pipe table of accuracy, macro AUC and the last class's AUC and sensitivity.

    Args:
        results (dict): as returned by :func:`train_slice_classifier_baseline`.
        dataset_names (Sequence[str]): the rows, in order.

    Returns:
        str
    """
    rows = []
    for name in dataset_names:
        metrics = results["metrics"][name]
        positive = MetadataCatalog.get(name).get("thing_classes")[-1]
        rows.append(
            [
                name,
                metrics["accuracy"],
                metrics["auc_macro"],
                metrics[f"auc/{positive}"],
                metrics[f"sensitivity/{positive}"],
            ]
        )
    headers = ["dataset", "accuracy", "AUC (macro)", "AUC (last class)", "sensitivity (last)"]
    return tabulate(rows, headers=headers, tablefmt="pipe", floatfmt=".1f")


def _json_safe(value):
    """NaN floats as None, so that the file is strict JSON."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, float) and value != value:
        return None
    return value
