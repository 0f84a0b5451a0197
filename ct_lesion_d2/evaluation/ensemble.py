"""An ensemble of trained classifiers, from their saved predictions: the mean of their class
probabilities per image, evaluated by ``CTClassificationEvaluator`` as one model.

Several runs of one config (other seeds) rank the same slices differently when the training
set is small (docs/RESULTS.md: the image-branch classifier on UCSD); averaging their
probabilities is the usual remedy. It reads the folders each run's evaluator wrote
(``tools/train_net.py --eval-only``) and writes the same files for the ensemble, so the
ensemble's folder goes on to ``tools/choose_decision_threshold.py`` like any run's.
"""

import argparse
import os

import numpy as np
import torch

from .classification_evaluation import CTClassificationEvaluator
from .operating_point import load_evaluation, load_predictions

__all__ = ["average_predictions", "evaluate_ensemble"]


def average_predictions(folders):
    """The per-image mean of the class probabilities that several evaluators saved.

    Args:
        folders (list[str]): evaluator folders of one split, one per model (at least two).

    Returns:
        tuple(list[dict], dict): ``image_id``, ``class_id`` and the mean ``class_probs``
        (np.ndarray) per image, in the first folder's order; the first folder's evaluation
        summary (``class_names``, ``dataset``).

    Raises:
        ValueError: fewer than two folders, or folders that differ in their classes, images or
            true classes (predictions of different splits).
    """
    if len(folders) < 2:
        raise ValueError(f"an ensemble needs the predictions of two models or more: {folders}")
    first, summary = load_evaluation(folders[0])
    class_names = summary["class_names"]
    truth = {p["image_id"]: p["class_id"] for p in first}
    probs = [np.asarray([p["class_probs"] for p in first], dtype=np.float64)]
    for folder in folders[1:]:
        predictions, names = load_predictions(folder)
        if names != class_names:
            raise ValueError(f"{folder}: classes {names} differ from {folders[0]}'s {class_names}")
        by_id = {p["image_id"]: p for p in predictions}
        if set(by_id) != set(truth) or any(by_id[i]["class_id"] != c for i, c in truth.items()):
            raise ValueError(
                f"{folder}: its images or true classes differ from {folders[0]}'s; ensemble "
                "the folders of one split"
            )
        probs.append(np.asarray([by_id[p["image_id"]]["class_probs"] for p in first]))
    mean = np.mean(probs, axis=0)
    averaged = [
        {"image_id": p["image_id"], "class_id": p["class_id"], "class_probs": m}
        for p, m in zip(first, mean)
    ]
    return averaged, summary


def evaluate_ensemble(folders, output_dir=None):
    """Evaluate the mean of several models' probabilities with ``CTClassificationEvaluator``
    (the argmax decides), writing its files into ``output_dir`` when given.

    Returns:
        OrderedDict: the evaluator's ``{"classification": {metric: percent}}``.
    """
    averaged, summary = average_predictions(folders)
    evaluator = CTClassificationEvaluator(
        summary.get("dataset", "ensemble"), output_dir, False, class_names=summary["class_names"]
    )
    inputs = [{"image_id": p["image_id"], "class_id": p["class_id"]} for p in averaged]
    outputs = []
    for p in averaged:
        probs = torch.as_tensor(p["class_probs"])
        outputs.append({"class_probs": probs, "pred_class": probs.argmax()})
    evaluator.process(inputs, outputs)
    return evaluator.evaluate()


def main(argv=None):
    """``tools/ensemble_classifier_predictions.py``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--runs", nargs="+", required=True, help="evaluator folders of one split, one per model"
    )
    parser.add_argument("--output", required=True, help="folder for the ensemble's files")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier ensemble")
    args = parser.parse_args(argv)
    target = os.path.join(args.output, "classification_predictions.json")
    if os.path.exists(target) and not args.overwrite:
        raise SystemExit(f"error: {target} exists; pass --overwrite to replace it")
    metrics = evaluate_ensemble(args.runs, args.output)["classification"]
    print(", ".join(f"{k} {v:.1f}" for k, v in metrics.items()))
    print(f"the ensemble of {len(args.runs)} models: {args.output}")
    return metrics
