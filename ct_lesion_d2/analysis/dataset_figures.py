"""The paper's analysis figures (docs/PAPER.md, section 5) for the slices of a registered
dataset split.

The command line of ``tools/analyze.py``.

For each slice: the analysis panel (the slice's lesions in one colour scale with their ids,
orientation and scale where known, the mask probability map, the ground truth, the classifier's
class scores) and the RoI statistics (confidence
histogram, area against confidence, top 16 and whole batch); plus ``analysis.json``.

    python tools/analyze.py --config-file configs/mask_rcnn_R18_T1_FPN1_medseg100_cpu.yaml \\
        --weights output/.../model_final.pth --dataset ct_lesion_medseg100_val --output analysis
"""

import argparse
import logging
import os
import sys
from collections import Counter

import numpy as np
from detectron2.data import DatasetCatalog
from tqdm import tqdm

from ..data.datasets.metadata import lesion_metadata
from ..data.io import DatasetFormatError
from ..data.readers import read_scan
from ..data.readers.geometry import scan_geometry
from ..utils.files import write_json_atomic
from ..visualization.analysis import TOP_ROIS, save_slice_figures
from ..visualization.lesion_overlay import slice_view
from .predict import add_model_arguments, build_configs, load_predictor, setup_console

logger = logging.getLogger("ct_lesion_d2.analyze")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_arguments(parser)
    parser.add_argument(
        "--dataset", help="registered dataset (default: the config's DATASETS.TEST)"
    )
    parser.add_argument("--output", required=True, help="a new folder for figures and JSON")
    parser.add_argument("--max-slices", type=int, default=None, help="first N slices only")
    parser.add_argument(
        "--per-class",
        type=int,
        default=None,
        metavar="N",
        help="the first N slices of each image class (a classification dataset, e.g. "
        "ct_ucsd_val), so that every class is looked at",
    )
    parser.add_argument("--overwrite", action="store_true", help="reuse a non-empty --output")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE")
    return parser.parse_args(argv)


def _roi_summary(prediction):
    scores = prediction.roi_scores.float()
    return {
        "source": prediction.roi_source,
        "num_detections": prediction.roi_num_detections,
        "mean_confidence_top": round(float(scores[:TOP_ROIS].mean()), 5) if len(scores) else None,
        "mean_confidence_batch": round(float(scores.mean()), 5) if len(scores) else None,
    }


def first_per_class(records, count, dataset):
    """The first ``count`` records of each ``class_id``, in dataset order.

    Raises:
        ValueError: the records carry no ``class_id`` (a segmentation dataset).
    """
    if not any("class_id" in r for r in records):
        raise ValueError(
            f"--per-class needs a classification dataset (records with a class_id); {dataset} "
            "has none: use --max-slices"
        )
    taken = Counter()
    chosen = []
    for record in records:
        if taken[record.get("class_id")] < count:
            taken[record.get("class_id")] += 1
            chosen.append(record)
    return chosen


def analyze_records(predictor, records, output, metadata, batch_size=4):
    """Figures and per-slice statistics for dataset records.

    Args:
        predictor (CTLesionPredictor): the models.
        records (list[dict]): Detectron2 dataset dicts (annotations drawn as ground truth).
        output (str): folder; figures go to ``output/panels``.
        metadata (Metadata): lesion class names.
        batch_size (int): slices per forward pass.

    Returns:
        list[dict]: one entry per record (also written by :func:`main` as analysis.json).
    """
    panels = os.path.join(output, "panels")
    os.makedirs(panels, exist_ok=True)
    entries = []
    for start in tqdm(range(0, len(records), batch_size), desc="analysis", unit="batch"):
        batch = records[start : start + batch_size]
        scans = [read_scan(r["file_name"]) for r in batch]
        for record, scan in zip(batch, scans):
            if scan.num_slices != 1:
                raise DatasetFormatError(record["file_name"], "a dataset record must be one slice")
        is_hu = {s.is_hu for s in scans}
        if len(is_hu) > 1:
            predictions = [predictor([s.pixels[0]], s.is_hu)[0] for s in scans]
        else:
            predictions = predictor([s.pixels[0] for s in scans], is_hu.pop())
        for k, (record, scan, prediction) in enumerate(zip(batch, scans, predictions)):
            name = os.path.splitext(os.path.basename(record["file_name"]))[0]
            stem = f"{start + k:04d}_{name}"
            saved = save_slice_figures(
                panels,
                stem,
                predictor.display_image(scan.pixels[0], scan.is_hu),
                prediction,
                metadata,
                predictor.class_names,
                record=record,
                title=os.path.basename(record["file_name"]),
                score_threshold=predictor.cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST,
                view=slice_view(scan_geometry(scan), scan.spacing_mm),
            )
            probs = prediction.class_probs
            entries.append(
                {
                    "file_name": record["file_name"],
                    "ground_truth_lesions": len(record.get("annotations", [])),
                    "class_id": record.get("class_id"),
                    "predicted_lesions": len(prediction.instances),
                    "lesion_scores": [round(float(s), 5) for s in prediction.instances.scores],
                    "class_probabilities": (
                        None if probs is None else [round(float(p), 6) for p in probs]
                    ),
                    "roi_batch": _roi_summary(prediction),
                    "panel": os.path.relpath(saved["panel"][0], output),
                    "roi_figure": os.path.relpath(saved["rois"][0], output),
                }
            )
    return entries


def main(argv=None):
    args = parse_args(argv)
    setup_console(args.verbose)
    if os.path.isdir(args.output) and os.listdir(args.output) and not args.overwrite:
        sys.exit(
            f"error: {args.output} exists and is not empty; pass --overwrite or another --output"
        )
    cfg, classifier_cfg = build_configs(args)
    dataset = args.dataset or (cfg.DATASETS.TEST[0] if len(cfg.DATASETS.TEST) else None)
    if dataset is None or dataset not in DatasetCatalog.list():
        sys.exit(f"error: dataset {dataset!r} is not registered (see README, Data)")
    try:
        records = DatasetCatalog.get(dataset)
    except DatasetFormatError as e:
        sys.exit(f"error: {e}")
    if args.per_class:
        try:
            records = first_per_class(records, args.per_class, dataset)
        except ValueError as e:
            sys.exit(f"error: {e}")
    records = records[: args.max_slices] if args.max_slices else records
    predictor = load_predictor(args, cfg, classifier_cfg)
    try:
        entries = analyze_records(
            predictor, records, args.output, lesion_metadata(cfg), args.batch_size
        )
    except DatasetFormatError as e:
        sys.exit(f"error: {e}")
    top = [e["roi_batch"]["mean_confidence_top"] for e in entries]
    summary = {
        "dataset": dataset,
        "num_slices": len(entries),
        "ground_truth_lesions": sum(e["ground_truth_lesions"] for e in entries),
        "predicted_lesions": sum(e["predicted_lesions"] for e in entries),
        f"mean_confidence_top{TOP_ROIS}": (
            float(np.mean([t for t in top if t is not None]))
            if any(t is not None for t in top)
            else None
        ),
        "confidence_threshold": cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST,
        "class_names": predictor.class_names,
    }
    path = os.path.join(args.output, "analysis.json")
    write_json_atomic({"summary": summary, "slices": entries}, path, overwrite=True)
    logger.info(
        f"{dataset}: {len(entries)} slices, {summary['predicted_lesions']} lesions predicted, "
        f"{summary['ground_truth_lesions']} annotated; figures in {args.output}/panels"
    )
    return path
