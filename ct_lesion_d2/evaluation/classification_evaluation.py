"""Slice-level classification metrics for ``CTMaskNetClassifier``, as a Detectron2 evaluator.

All metrics are percentages (0-100), like Detectron2's COCO numbers. A metric that cannot be
computed is NaN: the sensitivity of a class with no sample, the specificity of a class that every
sample belongs to, and the one-vs-rest AUC of a class with no positive or no negative sample.
Macro averages skip NaN entries and are NaN only when every entry is.
"""

import copy
import itertools
import logging
import os
from collections import OrderedDict

import detectron2.utils.comm as comm
import numpy as np
from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils.file_io import PathManager
from detectron2.utils.logger import create_small_table
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from tabulate import tabulate

from ..utils.files import atomic_write, write_json_atomic

__all__ = [
    "CTClassificationEvaluator",
    "binary_auc",
    "classification_metrics",
    "confusion_matrix",
    "plot_confusion_matrix",
    "plot_roc_curve",
    "roc_curve",
    "youden_threshold",
]


def confusion_matrix(y_true, y_pred, num_classes):
    """Count (true, predicted) pairs.

    Args:
        y_true (array-like[int]): true class of each image.
        y_pred (array-like[int]): predicted class of each image.
        num_classes (int): number of classes K.

    Returns:
        np.ndarray: (K, K) int64 counts, rows true class, columns predicted class.
    """
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    for name, y in (("true", y_true), ("predicted", y_pred)):
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            found = sorted(set(y.tolist()))
            raise ValueError(f"{name} class ids must lie in [0, {num_classes}); got {found}")
    flat = np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def binary_auc(scores, positives):
    """ROC AUC by the rank (Mann-Whitney U) formula; tied scores count 1/2.

    Args:
        scores (array-like[float]): score of each sample, higher meaning "more positive".
        positives (array-like[bool]): whether each sample is a positive.

    Returns:
        float: AUC in [0, 1]; NaN when there is no positive or no negative sample.
    """
    scores, positives = np.asarray(scores, dtype=np.float64), np.asarray(positives, dtype=bool)
    n_pos = int(positives.sum())
    n_neg = positives.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    # 1-based ranks, each tie group getting the mean of the ranks it spans
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    mean_ranks = np.cumsum(counts) - (counts - 1) / 2.0
    rank_sum = mean_ranks[inverse.reshape(-1)][positives].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(scores, positives):
    """The ROC of ``scores`` (higher: more positive) at every distinct score.

    Returns:
        tuple(np.ndarray): thresholds (descending, the first +inf: nothing called positive),
        false-positive rates and true-positive rates, one per threshold; "positive" means
        score >= threshold. NaN rates where a class has no sample.
    """
    scores, positives = np.asarray(scores, dtype=np.float64), np.asarray(positives, dtype=bool)
    thresholds = np.concatenate([[np.inf], np.unique(scores)[::-1]])
    called = scores[None, :] >= thresholds[:, None]
    n_pos, n_neg = positives.sum(), (~positives).sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        tpr = (called & positives).sum(axis=1) / n_pos
        fpr = (called & ~positives).sum(axis=1) / n_neg
    return thresholds, fpr, tpr


def youden_threshold(scores, positives):
    """The score threshold of the largest sensitivity + specificity - 1 (Youden's J).

    Ties go to the higher threshold (the fewer positive calls). Returns a value midway between
    the chosen score and the next lower one, so that a threshold taken from one split does not
    sit exactly on one of its samples.

    Returns:
        float: the threshold; NaN when either class has no sample.
    """
    thresholds, fpr, tpr = roc_curve(scores, positives)
    j = tpr - fpr
    if np.isnan(j).all():
        return float("nan")
    best = int(np.nanargmax(j[1:])) + 1  # +inf (nothing positive) is never the choice
    lower = thresholds[best + 1] if best + 1 < thresholds.size else 0.0
    return float((thresholds[best] + lower) / 2.0)


def _nanmean(values):
    """Mean of the finite entries of ``values``; NaN (without a warning) if there is none."""
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def classification_metrics(y_true, y_pred, probs, class_names):
    """Accuracy, per-class sensitivity/specificity/F1/AUC and their macro averages.

    Args:
        y_true (array-like[int]): (N,) true class of each image.
        y_pred (array-like[int]): (N,) predicted class of each image.
        probs (array-like[float]): (N, K) per-class scores, used one-vs-rest for the AUC.
        class_names (list[str]): the K class names, used in the metric keys.

    Returns:
        tuple(OrderedDict[str, float], np.ndarray): metrics in percent (keys ``accuracy``,
        ``f1_macro``, ``auc_macro``, ``sensitivity/<c>``, ``specificity/<c>``, ``f1/<c>``,
        ``auc/<c>``), and the (K, K) confusion matrix (rows true, columns predicted).
    """
    num_classes = len(class_names)
    probs = np.asarray(probs, dtype=np.float64).reshape(-1, num_classes)
    cm = confusion_matrix(y_true, y_pred, num_classes)
    tp = np.diag(cm).astype(np.float64)
    fn, fp = cm.sum(axis=1) - tp, cm.sum(axis=0) - tp
    tn = cm.sum() - tp - fn - fp
    with np.errstate(invalid="ignore", divide="ignore"):
        sensitivity, specificity = tp / (tp + fn), tn / (tn + fp)
        # a class never present and never predicted has no F1 and is left out of the mean
        f1 = 2 * tp / (2 * tp + fp + fn)
    y_true = np.asarray(y_true)
    auc = np.array([binary_auc(probs[:, k], y_true == k) for k in range(num_classes)])
    metrics = OrderedDict(
        accuracy=tp.sum() / max(cm.sum(), 1), f1_macro=_nanmean(f1), auc_macro=_nanmean(auc)
    )
    for name, values in (("sensitivity", sensitivity), ("specificity", specificity)):
        metrics.update((f"{name}/{c}", v) for c, v in zip(class_names, values))
    metrics.update((f"f1/{c}", v) for c, v in zip(class_names, f1))
    metrics.update((f"auc/{c}", v) for c, v in zip(class_names, auc))
    return OrderedDict((k, float(100.0 * v)) for k, v in metrics.items()), cm


def plot_confusion_matrix(cm, class_names, path, title=""):
    """Save the confusion matrix as a PNG picture, with the count written in each cell.

    Uses the Agg canvas directly rather than ``pyplot``, so no global backend is changed.

    Args:
        cm (np.ndarray): (K, K) counts, rows true class, columns predicted class.
        class_names (list[str]): the K class names.
        path (str): where to write the PNG (replaced atomically).
        title (str): title of the picture.
    """
    size = 2.0 + 1.1 * len(class_names)
    fig = Figure(figsize=(size + 1.0, size), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    image = ax.imshow(cm, cmap="Blues", vmin=0)
    fig.colorbar(image, ax=ax, ticks=MaxNLocator(integer=True))
    ticks = np.arange(len(class_names))
    ax.set(xticks=ticks, yticks=ticks, xlabel="Predicted class", ylabel="True class", title=title)
    ax.set_xticklabels(class_names, rotation=30, ha="right")
    ax.set_yticklabels(class_names)
    threshold = cm.max() / 2.0
    for (i, j), count in np.ndenumerate(cm):
        color = "white" if count > threshold else "black"
        ax.text(j, i, str(count), ha="center", va="center", color=color)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png"))


def plot_roc_curve(scores, positives, path, points=(), title=""):
    """Save the ROC of ``scores`` as a PNG, with named operating points marked.

    Args:
        scores, positives: as :func:`roc_curve`.
        path (str): where to write the PNG (replaced atomically).
        points (Iterable[tuple[str, array-like[bool]]]): (label, which samples a decision
            calls positive) to mark on the curve.
        title (str): title of the picture.
    """
    _, fpr, tpr = roc_curve(scores, positives)
    positives = np.asarray(positives, dtype=bool)
    fig = Figure(figsize=(4.6, 4.4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.plot(np.append(fpr, 1.0), np.append(tpr, 1.0), color="tab:blue", drawstyle="steps-post")
    ax.plot([0, 1], [0, 1], color="0.7", linestyle="--", linewidth=0.8)
    for (label, called), marker in zip(points, "os^Dv"):
        called = np.asarray(called, dtype=bool)
        x = (called & ~positives).sum() / max((~positives).sum(), 1)
        y = (called & positives).sum() / max(positives.sum(), 1)
        ax.plot([x], [y], marker=marker, linestyle="none", label=label)
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="1 - specificity", ylabel="sensitivity")
    ax.set_title(title, fontsize=9)
    if points:
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png"))


class CTClassificationEvaluator(DatasetEvaluator):
    """Evaluate slice classification (``CTMaskNetClassifier`` outputs) against ``class_id``.

    ``evaluate()`` returns ``OrderedDict(classification={metric: float})`` with scalar metrics
    only (as ``print_csv_format``, ``verify_results`` and ``EvalHook`` expect); the confusion
    matrix is kept in ``self.confusion_matrix`` and in ``classification_metrics.json``. For two
    classes it adds ``youden_threshold`` (the second class's probability, in percent, that
    maximises sensitivity + specificity on this split: a threshold to choose on a validation
    split, ``MODEL.CT_CLASSIFIER.DECISION_THRESHOLD``) and draws ``roc_curve.png``.
    """

    def __init__(self, dataset_name, output_dir=None, distributed=True, class_names=None):
        """
        Args:
            dataset_name (str): name of the dataset to evaluate.
            output_dir (str or None): where to write the predictions, metrics and confusion
                matrix picture (main process only); nothing is written when None.
            distributed (bool): gather the predictions of every process before evaluating.
            class_names (list[str] or None): the class names, in class-id order; by default
                ``MetadataCatalog.get(dataset_name).class_names`` (Detectron2's alias of
                ``thing_classes``).

        Raises:
            ValueError: if neither ``class_names`` nor the metadata gives the class names.
        """
        self._logger = logging.getLogger(__name__)
        self._dataset_name = dataset_name
        self._output_dir = output_dir
        self._distributed = distributed
        if class_names is None:
            # Detectron2 stores metadata "class_names" as "thing_classes"; read it warning-free
            class_names = MetadataCatalog.get(dataset_name).get("thing_classes")
        if not class_names:
            raise ValueError(
                f"CTClassificationEvaluator: no class names for dataset '{dataset_name}'; pass "
                f"class_names=[...] or set MetadataCatalog.get('{dataset_name}').class_names"
            )
        self._class_names = [str(c) for c in class_names]
        self.confusion_matrix = None
        self.reset()

    def reset(self):
        self._predictions = []
        self.confusion_matrix = None

    def process(self, inputs, outputs):
        """Store, per image, its id, true class, predicted class and probability vector.

        Args:
            inputs (list[dict]): the model inputs; each needs ``"image_id"`` and ``"class_id"``.
            outputs (list[dict]): the model outputs; each needs ``"pred_class"`` and
                ``"class_probs"`` (K,).
        """
        for inp, out in zip(inputs, outputs):
            if "class_id" not in inp:
                raise KeyError(
                    f"input {inp.get('image_id')!r} has no 'class_id'; the dataset mapper must "
                    "keep it for CTClassificationEvaluator"
                )
            probs = out["class_probs"].detach().cpu().float().numpy().reshape(-1)
            if probs.size != len(self._class_names):
                raise ValueError(
                    f"class_probs has {probs.size} entries, expected {len(self._class_names)} "
                    f"(classes {self._class_names})"
                )
            image_id = inp["image_id"]
            self._predictions.append(
                {
                    "image_id": image_id.item() if hasattr(image_id, "item") else image_id,
                    "class_id": int(inp["class_id"]),
                    "pred_class": int(out["pred_class"]),
                    "class_probs": probs,
                }
            )

    def evaluate(self):
        """Compute the metrics over every processed image (gathered on the main process).

        Returns:
            OrderedDict: ``{"classification": {metric: percent}}``; ``{}`` on non-main
            processes and when no image was processed.
        """
        if self._distributed:
            comm.synchronize()
            predictions = list(itertools.chain(*comm.gather(self._predictions, dst=0)))
            if not comm.is_main_process():
                return {}
        else:
            predictions = self._predictions
        if not predictions:
            self._logger.warning("[CTClassificationEvaluator] Did not receive valid predictions.")
            return {}
        metrics, self.confusion_matrix = classification_metrics(
            [p["class_id"] for p in predictions],
            [p["pred_class"] for p in predictions],
            np.stack([p["class_probs"] for p in predictions]),
            self._class_names,
        )
        if len(self._class_names) == 2:
            # the operating point a validation split would choose (operating_point.py); in
            # percent like the other numbers: 43.2 means a probability of 0.432
            metrics["youden_threshold"] = 100.0 * youden_threshold(
                [p["class_probs"][1] for p in predictions],
                [p["class_id"] == 1 for p in predictions],
            )
        self._log_metrics(metrics, len(predictions))
        if self._output_dir:
            self._save(predictions, metrics)
        return OrderedDict(classification=copy.deepcopy(metrics))

    def _log_metrics(self, metrics, num_images):
        """Log the overall metrics, a per-class table and the confusion matrix."""
        keys = ("accuracy", "f1_macro", "auc_macro", "youden_threshold")
        overall = {k: metrics[k] for k in keys if k in metrics}
        support = self.confusion_matrix.sum(axis=1)
        rows = [
            [c, n] + [metrics[f"{m}/{c}"] for m in ("sensitivity", "specificity", "f1", "auc")]
            for c, n in zip(self._class_names, support)
        ]
        headers = ["class", "#images", "sensitivity", "specificity", "F1", "AUC"]
        per_class = tabulate(rows, headers=headers, tablefmt="pipe", floatfmt=".3f")
        cm_rows = [[c] + list(r) for c, r in zip(self._class_names, self.confusion_matrix)]
        cm_table = tabulate(cm_rows, headers=["true \\ pred"] + self._class_names, tablefmt="pipe")
        self._logger.info(
            f"Classification results for {self._dataset_name} ({num_images} images):\n"
            f"{create_small_table(overall)}\n{per_class}\nConfusion matrix:\n{cm_table}"
        )

    def _save(self, predictions, metrics):
        """Write the per-image predictions, the metrics and the confusion matrix picture.

        NaN metrics are written as JSON ``null`` so that the files are strict JSON.
        """
        PathManager.mkdirs(self._output_dir)
        names = self._class_names
        per_image = [
            dict(
                p,
                class_probs=p["class_probs"].tolist(),
                class_name=names[p["class_id"]],
                pred_name=names[p["pred_class"]],
            )
            for p in predictions
        ]
        write_json_atomic(
            per_image,
            os.path.join(self._output_dir, "classification_predictions.json"),
            overwrite=True,
        )
        summary = {
            "dataset": self._dataset_name,
            "class_names": names,
            "num_images": len(predictions),
            "metrics": {k: (None if np.isnan(v) else v) for k, v in metrics.items()},
            "confusion_matrix": self.confusion_matrix.tolist(),
        }
        write_json_atomic(
            summary, os.path.join(self._output_dir, "classification_metrics.json"), overwrite=True
        )
        plot_confusion_matrix(
            self.confusion_matrix,
            names,
            os.path.join(self._output_dir, "confusion_matrix.png"),
            title=f"{self._dataset_name}: accuracy {metrics['accuracy']:.1f}%",
        )
        if len(names) == 2 and not np.isnan(metrics["youden_threshold"]):
            positives = [p["class_id"] == 1 for p in predictions]
            scores = [p["class_probs"][1] for p in predictions]
            youden = metrics["youden_threshold"] / 100.0
            plot_roc_curve(
                scores,
                positives,
                os.path.join(self._output_dir, "roc_curve.png"),
                points=[
                    ("the model's decision", [p["pred_class"] == 1 for p in predictions]),
                    (f"Youden's threshold {youden:.3f}", [s >= youden for s in scores]),
                ],
                title=f"{self._dataset_name}: {names[1]}, AUC {metrics[f'auc/{names[1]}']:.1f}",
            )
