"""The main job end to end on the embedded synthetic data, with no download.

Generates synthetic CT-like slices, converts them to COCO, trains the ResNet18_T1 lesion
segmenter with the CPU schedule, evaluates it with COCOEvaluator, writes Visualizer panels and
prints the AP. Then trains the COVID-CT-Mask-Net classifier (Control / Common Pneumonia /
COVID-19) on that segmenter's ranked RoI batches and prints its confusion matrix on the
validation slices. Last, the model zoo's segmenter, trained on real CT, writes a scan report
on the real CT slice that ships with the project (``datasets/samples``). About 9 minutes on
2 CPU cores.

    python tools/demo.py --output output/demo     # make demo
"""

import argparse
import json
import logging
import os
import sys
import time

from detectron2.data import DatasetCatalog
from detectron2.engine import DefaultPredictor
from detectron2.utils.logger import setup_logger

from .config import get_cfg_for
from .data.converters import convert_layout
from .data.datasets import register_ct_classification, register_ct_lesion_coco
from .data.synthetic import CLASS_NAMES, generate_synthetic_slices
from .engine import CTLesionTrainer
from .model_zoo import DEFAULT_ZOO_MODEL
from .visualization import save_prediction_panels

CONFIG = "mask_rcnn_R18_T1_FPN1_synthetic_cpu.yaml"
# The real CT slice that ships with the project (its licence and attribution beside it).
REAL_SLICE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    "datasets",
    "samples",
    "tcia_covid19_ny_sbu_A002304_135.dcm",
)
CLASSIFIER = "classifier_R18_T1"
# Module S on cached RoI batches (frozen BatchNorm): 50 epochs of the 72 training slices.
CLASSIFIER_OPTS = [
    "MODEL.CT_CLASSIFIER.TRAIN_BN_AFFINE",
    "False",
    "MODEL.CT_CLASSIFIER.CACHE_ROI_BATCHES",
    "True",
    "INPUT.RANDOM_FLIP",
    "none",
    "SOLVER.IMS_PER_BATCH",
    "8",
    "SOLVER.BASE_LR",
    "0.0001",
    "TEST.EVAL_PERIOD",
    "0",
    "DATALOADER.NUM_WORKERS",
    "0",
    "SEED",
    "0",
]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", default="output/demo", help="a new folder for everything")
    parser.add_argument("--num-slices", type=int, default=90, help="synthetic slices (20%% val)")
    parser.add_argument("--max-iter", type=int, default=None, help="override SOLVER.MAX_ITER")
    parser.add_argument(
        "--classifier-iter",
        type=int,
        default=450,
        help="SOLVER.MAX_ITER of the classifier (module S on cached RoI batches)",
    )
    parser.add_argument("--skip-classifier", action="store_true", help="segmentation stage only")
    parser.add_argument(
        "--skip-real-slice",
        action="store_true",
        help="skip the zoo model's report on the shipped real CT slice",
    )
    parser.add_argument("--overwrite", action="store_true", help="reuse a non-empty --output")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE ...")
    return parser.parse_args(argv)


def prepare_data(output, num_slices, overwrite):
    """Synthetic slices -> COCO JSON, registered as ct_lesion_demo_{train,val}."""
    slices = os.path.join(output, "synthetic")
    generate_synthetic_slices(slices, num_slices, seed=0, overwrite=overwrite)
    outputs = convert_layout(
        "two-label-folder", slices, os.path.join(output, "coco"), overwrite=overwrite
    )
    for split, path in outputs.items():
        register_ct_lesion_coco(f"ct_lesion_demo_{split}", path, ["Lesion"])
    # the classification datasets: the same slices and split, with the scan class of each
    with open(os.path.join(slices, "slices.json")) as f:
        class_ids = {r["file_name"]: r["class_id"] for r in json.load(f)}
    for split in outputs:
        records = [
            {
                "file_name": d["file_name"],
                "image_id": d["image_id"],
                "class_id": class_ids[os.path.relpath(d["file_name"], slices)],
            }
            for d in DatasetCatalog.get(f"ct_lesion_demo_{split}")
        ]
        register_ct_classification(f"ct_demo_cls_{split}", lambda r=records: r, CLASS_NAMES)


def train_classifier(segmentation_cfg, output, max_iter):
    """Train the classifier on the segmenter's detector; returns the evaluator's metrics and
    confusion matrix on ct_demo_cls_val."""
    opts = [
        "MODEL.CT_CLASSIFIER.SEGMENTATION_WEIGHTS",
        segmentation_cfg.MODEL.WEIGHTS,
        "DATASETS.TRAIN",
        "('ct_demo_cls_train',)",
        "DATASETS.TEST",
        "('ct_demo_cls_val',)",
        "OUTPUT_DIR",
        output,
        "MODEL.DEVICE",
        segmentation_cfg.MODEL.DEVICE,
        "SOLVER.MAX_ITER",
        str(max_iter),
        "SOLVER.CHECKPOINT_PERIOD",
        str(max_iter),
    ]
    for key in ("MIN_SIZE_TRAIN", "MAX_SIZE_TRAIN", "MIN_SIZE_TEST", "MAX_SIZE_TEST"):
        opts += [f"INPUT.{key}", str(segmentation_cfg.INPUT[key])]
    cfg = get_cfg_for(CLASSIFIER, CLASSIFIER_OPTS + opts)
    trainer = CTLesionTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    metrics_file = os.path.join(
        output, "inference", "ct_demo_cls_val", "classification_metrics.json"
    )
    with open(metrics_file) as f:
        saved = json.load(f)
    return trainer.eval_results()["classification"], saved["confusion_matrix"]


def print_confusion_matrix(matrix, class_names):
    """Rows: true class; columns: predicted class."""
    width = max(len(c) for c in class_names) + 2
    print("confusion matrix (rows true, columns predicted):")
    print(" " * width + "".join(f"{c[:width - 2]:>{width}}" for c in class_names))
    for name, row in zip(class_names, matrix):
        print(f"{name:<{width}}" + "".join(f"{v:>{width}}" for v in row))


def main(argv=None):
    args = parse_args(argv)
    if os.path.isdir(args.output) and os.listdir(args.output) and not args.overwrite:
        sys.exit(
            f"error: {args.output} exists and is not empty; pass --overwrite or another --output"
        )
    setup_logger(name="ct_lesion_d2")
    logging.getLogger("PIL").setLevel(logging.WARNING)
    logger = setup_logger(output=os.path.join(args.output, "log.txt"))
    start = time.time()
    prepare_data(args.output, args.num_slices, args.overwrite)
    opts = [
        "DATASETS.TRAIN",
        "('ct_lesion_demo_train',)",
        "DATASETS.TEST",
        "('ct_lesion_demo_val',)",
        "OUTPUT_DIR",
        os.path.join(args.output, "model"),
    ] + args.opts
    if args.max_iter is not None:
        opts += ["SOLVER.MAX_ITER", str(args.max_iter)]
    cfg = get_cfg_for(CONFIG, opts)
    trainer = CTLesionTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    results = trainer.eval_results()  # those of the final evaluation (EvalHook)
    cfg.MODEL.WEIGHTS = os.path.join(cfg.OUTPUT_DIR, "model_final.pth")
    records = DatasetCatalog.get("ct_lesion_demo_val")[:4]
    panels = os.path.join(args.output, "panels")
    paths = save_prediction_panels(
        DefaultPredictor(cfg), records, "ct_lesion_demo_val", panels, overwrite=args.overwrite
    )
    logger.info("Visualizer panels (prediction | ground truth): %s", ", ".join(paths))
    for task in ("bbox", "segm"):
        r = results.get(task)
        if r is None:
            print(f"demo {task}: no predictions above the score threshold (AP 0)")
            continue
        print(f"demo {task}: AP {r['AP']:.1f}  AP50 {r['AP50']:.1f}  AP75 {r['AP75']:.1f}")
    if not args.skip_classifier:
        metrics, matrix = train_classifier(
            cfg, os.path.join(args.output, "classifier"), args.classifier_iter
        )
        results["classification"] = metrics
        print(
            f"demo classifier: accuracy {metrics['accuracy']:.1f}  macro F1 "
            f"{metrics['f1_macro']:.1f}  on {sum(map(sum, matrix))} validation slices"
        )
        print_confusion_matrix(matrix, CLASS_NAMES)
    if not args.skip_real_slice:
        results["real_slice_report"] = real_slice_report(os.path.join(args.output, "real_slice"))
    print(f"demo finished in {time.time() - start:.0f} s; outputs in {args.output}")
    return results


def real_slice_report(output):
    """The default zoo model (trained on real CT) on the real slice that ships with the project
    (``datasets/samples``, TCIA COVID-19-NY-SBU, CC BY 4.0): a scan report as ``predict.py``
    writes it. Returns the path of its ``report.json``."""
    from .analysis.predict import main as predict

    (report,) = predict(["--input", REAL_SLICE, "--output", output, "--device", "cpu"])
    with open(report) as f:
        summary = json.load(f)["summary"]
    print(
        f"demo real slice ({os.path.basename(REAL_SLICE)}, zoo model {DEFAULT_ZOO_MODEL}): "
        f"{summary['lesion_count']} lesions; report "
        f"{os.path.join(os.path.dirname(report), 'report.html')}"
    )
    return report
