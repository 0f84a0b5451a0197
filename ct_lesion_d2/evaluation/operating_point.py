"""The operating point of a two-class slice classifier: its ROC, Youden's threshold, and the
metrics at a threshold chosen on a validation split and applied, unchanged, to a test split.

A classifier ranks the slices by the second (positive) class's probability; its AUC measures the
ranking, the argmax picks one point of the ROC. When the argmax point is badly placed (a model
that calls most slices positive), ``MODEL.CT_CLASSIFIER.DECISION_THRESHOLD`` moves it. Choosing
that threshold on the split it is then measured on flatters the result, so
:func:`validation_operating_point` takes it from one split's predictions and reports the others
at it. The ROC and Youden's threshold themselves are in ``classification_evaluation.py``.
"""

import argparse
import json
import os

import numpy as np
from tabulate import tabulate

from ..utils.files import write_json_atomic
from .classification_evaluation import classification_metrics, youden_threshold

__all__ = [
    "format_operating_point",
    "load_evaluation",
    "load_predictions",
    "metrics_at_threshold",
    "validation_operating_point",
]


def load_evaluation(folder):
    """The per-image predictions and the summary a ``CTClassificationEvaluator`` wrote in
    ``folder`` (``classification_metrics.json``: ``dataset``, ``class_names``, ``metrics`` ...).

    Returns:
        tuple(list[dict], dict): the predictions and the summary.

    Raises:
        FileNotFoundError: naming the missing file and how it is made.
    """
    files = [
        os.path.join(folder, name)
        for name in ("classification_predictions.json", "classification_metrics.json")
    ]
    for path in files:
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{path}: not found; evaluate the classifier on that split first (its "
                "CTClassificationEvaluator writes it, e.g. tools/train_net.py --eval-only)"
            )
    with open(files[0]) as f:
        predictions = json.load(f)
    with open(files[1]) as f:
        summary = json.load(f)
    return predictions, summary


def load_predictions(folder):
    """The per-image predictions a ``CTClassificationEvaluator`` wrote in ``folder``.

    Returns:
        tuple(list[dict], list[str]): the predictions and the class names.

    Raises:
        FileNotFoundError: naming the missing file and how it is made.
    """
    predictions, summary = load_evaluation(folder)
    return predictions, summary["class_names"]


def metrics_at_threshold(predictions, class_names, threshold):
    """``classification_metrics`` of two-class predictions with class 1 called at
    ``class_probs[1] >= threshold`` instead of their stored ``pred_class``.

    Returns:
        tuple(OrderedDict, np.ndarray): metrics in percent and the confusion matrix.
    """
    if len(class_names) != 2:
        raise ValueError(f"a decision threshold needs two classes, got {class_names}")
    probs = np.asarray([p["class_probs"] for p in predictions], dtype=np.float64)
    y_true = [p["class_id"] for p in predictions]
    y_pred = (probs[:, 1] >= threshold).astype(np.int64)
    return classification_metrics(y_true, y_pred, probs, class_names)


def validation_operating_point(val_folder, other_folders):
    """Youden's threshold on the validation predictions, and every split's metrics at it.

    Args:
        val_folder (str): an evaluator's output folder of the validation split.
        other_folders (list[str]): those of the splits to report at that threshold.

    Returns:
        dict: ``threshold``, ``positive_class`` and, per folder (validation first),
        ``argmax`` (the stored predictions' metrics) and ``at_threshold`` metrics.
    """
    loaded = {folder: load_predictions(folder) for folder in [val_folder, *other_folders]}
    predictions, class_names = loaded[val_folder]
    if len(class_names) != 2:
        raise ValueError(f"{val_folder}: a decision threshold needs two classes, {class_names}")
    threshold = youden_threshold(
        [p["class_probs"][1] for p in predictions], [p["class_id"] == 1 for p in predictions]
    )
    result = {"threshold": threshold, "positive_class": class_names[1], "splits": {}}
    for folder, (preds, names) in loaded.items():
        if names != class_names:
            raise ValueError(f"{folder}: classes {names} differ from {val_folder}'s {class_names}")
        stored, _ = classification_metrics(
            [p["class_id"] for p in preds],
            [p["pred_class"] for p in preds],
            np.asarray([p["class_probs"] for p in preds], dtype=np.float64),
            names,
        )
        at_threshold, _ = metrics_at_threshold(preds, names, threshold)
        result["splits"][folder] = {"argmax": stored, "at_threshold": at_threshold}
    return result


def format_operating_point(result):
    """A Markdown table of :func:`validation_operating_point`'s result, a row per split."""
    positive = result["positive_class"]
    rows = []
    for folder, split in result["splits"].items():
        row = [folder]
        for key in ("argmax", "at_threshold"):
            m = split[key]
            row += [m["accuracy"], m[f"sensitivity/{positive}"], m[f"specificity/{positive}"]]
        rows.append(row + [split["at_threshold"][f"auc/{positive}"]])
    headers = ["predictions", "accuracy", "sensitivity", "specificity"]
    headers += [f"{h} at {result['threshold']:.3f}" for h in headers[1:]] + ["AUC"]
    return tabulate(rows, headers=headers, tablefmt="pipe", floatfmt=".1f")


def main(argv=None):
    """``tools/choose_decision_threshold.py``: Youden's threshold on a validation split's
    predictions, every split's metrics at it, and the config override that applies it."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--val", required=True, help="evaluator folder of the validation split")
    parser.add_argument(
        "--report", nargs="*", default=[], help="evaluator folders reported at the threshold"
    )
    parser.add_argument("--json", help="write the result here (refused if it exists)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json")
    args = parser.parse_args(argv)
    result = validation_operating_point(args.val, args.report)
    print(format_operating_point(result))
    print(
        f"chosen on {args.val} only: MODEL.CT_CLASSIFIER.DECISION_THRESHOLD "
        f"{result['threshold']:.4f}"
    )
    if args.json:
        write_json_atomic(result, args.json, overwrite=args.overwrite)
    return result
