"""Export a trained segmenter or classifier to TorchScript and ONNX, and check the exports.

The command line of ``tools/export.py``:

    python tools/export.py --config-file configs/mask_rcnn_R18_T1_FPN1_medseg100_cpu.yaml \\
        --output exported/r18_t1 --images ../shared/data/medseg100/images \\
        MODEL.WEIGHTS output/mask_rcnn_R18_T1_FPN1_medseg100_cpu/model_final.pth
    python tools/export.py ... --eval-dataset ct_lesion_medseg100_val   # + AP, eager and exported
    python tools/export.py --config-file configs/classifier_R18_T1_covidx.yaml \\
        --output exported/cls --images ../shared/data/medseg100/images \\
        MODEL.CT_CLASSIFIER.SEGMENTATION_WEIGHTS output/.../model_final.pth

The model is traced through Detectron2's ``TracingAdapter`` on the first slice (BatchNorm
folded first unless ``--no-fold-bn``); every exported file is then run on each check slice
beside the eager model, and the largest differences of boxes, scores and masks (classifier:
class probabilities, RoI scores and boxes) are compared with the tolerances of
``ct_lesion_d2.export``. ``--eval-dataset`` also computes the bbox/segm AP of the eager model,
the optimised eager model (``optimize_for_inference``) and every export. ``export.json`` in
``--output`` records everything; the exit status is 1 when a check fails. Existing files are
replaced only with ``--overwrite``.
"""

import argparse
import copy
import logging
import os
import sys
import time

import torch
from detectron2.modeling import build_model
from detectron2.utils.logger import setup_logger
from tqdm import tqdm

from ..config import get_cfg_for
from ..data.io import DatasetFormatError
from ..data.mappers import CTLesionDatasetMapper
from ..data.readers import list_image_files
from ..engine.trainer import CTLesionTrainer
from ..engine.weights_check import WeightsError, load_checked_weights
from ..modeling.meta_arch import is_classifier_config as is_classifier
from ..modeling.meta_arch import load_model_weights
from ..utils.cli import quiet_third_party_warnings
from ..utils.files import write_json_atomic
from .classification import (
    CLASSIFIER_TOLERANCES,
    ExportedClassifier,
    compare_classification,
    export_classifier,
    exported_classifier_files,
)
from .optimize import optimize_for_inference
from .segmentation import (
    PASTED_MASK_TOLERANCE,
    SEGMENTATION_TOLERANCES,
    ExportedSegmenter,
    compare_segmentation,
    export_segmenter,
    segmentation_adapter,
)
from .tracing import EXPORT_FORMATS, ONNX_DEFAULT_OPSET, ExportError, check_exportable

logger = logging.getLogger("ct_lesion_d2.export")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", required=True, help="segmenter or classifier config")
    parser.add_argument("--output", required=True, help="folder for the exported files")
    parser.add_argument(
        "--format", nargs="+", default=list(EXPORT_FORMATS), choices=list(EXPORT_FORMATS)
    )
    parser.add_argument(
        "--images",
        action="append",
        default=[],
        metavar="PATH",
        help="check slices: a folder of images or a slice file (PNG/JPG, DICOM, NIfTI); "
        "repeat for more",
    )
    parser.add_argument("--max-images", type=int, default=16, help="check at most this many")
    parser.add_argument("--eval-dataset", help="also evaluate AP of eager and exported models")
    parser.add_argument("--opset", type=int, default=ONNX_DEFAULT_OPSET, help="ONNX opset")
    parser.add_argument("--no-fold-bn", action="store_true", help="export BatchNorm unfolded")
    parser.add_argument("--overwrite", action="store_true", help="replace existing exports")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides KEY VALUE")
    args = parser.parse_args(argv)
    if not args.images and not args.eval_dataset:
        parser.error("give --images (check slices) or --eval-dataset (its images are checked)")
    return args


def list_images(sources, limit):
    """Image files from files and folders (natural order within a folder), at most ``limit``."""
    files = []
    for source in sources:
        if os.path.isdir(source):
            try:
                files.extend(list_image_files(source))
            except DatasetFormatError as e:
                raise SystemExit(str(e))
        elif os.path.isfile(source):
            files.append(source)
        else:
            raise SystemExit(f"{source}: no such file or folder")
    return files[:limit]


def dataset_inputs(cfg, dataset_name, limit):
    """The first ``limit`` inputs of the dataset's test loader (already mapped)."""
    inputs = []
    for batch in CTLesionTrainer.build_test_loader(cfg, dataset_name):
        inputs.extend(batch)
        if len(inputs) >= limit:
            break
    return inputs[:limit]


def setup(args):
    cfg = get_cfg_for(args.config_file, args.opts)
    cfg.freeze()
    return cfg


def load_model(cfg, config_file=None):
    """The model of ``cfg`` in eval mode: ``MODEL.WEIGHTS`` checked against it (weights that
    do not fit stop with one line), else ``load_model_weights``' fallbacks (a classifier's
    detector from ``SEGMENTATION_WEIGHTS``, or a random segmenter with a warning)."""
    model = build_model(cfg)
    if cfg.MODEL.WEIGHTS:
        try:
            load_checked_weights(model, cfg.MODEL.WEIGHTS, config_file)
        except WeightsError as e:
            sys.exit(f"error: {e}")
    elif not load_model_weights(model, cfg) and not is_classifier(cfg):
        logger.warning("MODEL.WEIGHTS is empty: exporting a randomly initialised segmenter")
    return model.eval()


def export_all(model, cfg, args, example):
    """Export every format; returns {format: (runner, [files], seconds)}."""
    classifier = is_classifier(cfg)
    meta = {"config_file": os.path.abspath(args.config_file), "weights": cfg.MODEL.WEIGHTS}
    exports = {}
    for fmt in args.format:
        start = time.perf_counter()
        if classifier:
            prefix = os.path.join(args.output, "classifier")
            export_classifier(
                model,
                example,
                fmt,
                prefix,
                opset=args.opset,
                fold_bn=not args.no_fold_bn,
                overwrite=args.overwrite,
                meta=meta,
            )
            runner = ExportedClassifier(prefix, fmt)
            files = exported_classifier_files(prefix, fmt)
        else:
            path = os.path.join(args.output, "segmenter" + EXPORT_FORMATS[fmt])
            export_segmenter(
                model,
                example,
                fmt,
                path,
                opset=args.opset,
                fold_bn=not args.no_fold_bn,
                overwrite=args.overwrite,
                meta=meta,
            )
            runner = ExportedSegmenter(path)
            files = [path, path + ".json"]
        exports[fmt] = (runner, files, time.perf_counter() - start)
        logger.info(f"{fmt}: wrote {', '.join(files)} in {exports[fmt][2]:.1f} s")
    return exports


def check_exports(model, exports, inputs, classifier):
    """Run eager and exported models on every input; returns per-format reports."""
    reports = {fmt: {"images": []} for fmt in exports}
    for inputs_ in tqdm(inputs, desc="checking", unit="slice"):
        name = os.path.basename(inputs_.get("file_name", "?"))
        with torch.no_grad():
            if classifier:
                reference = model([inputs_])[0]
            else:
                _, names, outputs = segmentation_adapter(model, inputs_["image"])
                reference = dict(zip(names, outputs))
        for fmt, (runner, _, _) in exports.items():
            if classifier:
                result = compare_classification(reference, runner([inputs_])[0])
            else:
                result = compare_segmentation(reference, runner.raw(inputs_["image"]))
            reports[fmt]["images"].append({"image": name, **result})
    for report in reports.values():
        report["ok"] = all(r["ok"] for r in report["images"])
    return reports


def evaluate(cfg, dataset_name, runners):
    """segm/bbox AP of each runner (name -> callable model) on ``dataset_name``."""
    from detectron2.evaluation import inference_on_dataset

    results = {}
    for name, runner in runners.items():
        evaluator = CTLesionTrainer.build_evaluator(cfg, dataset_name)
        loader = CTLesionTrainer.build_test_loader(cfg, dataset_name)
        results[name] = inference_on_dataset(runner, loader, evaluator)
    return results


def print_summary(reports, classifier):
    tolerances = CLASSIFIER_TOLERANCES if classifier else SEGMENTATION_TOLERANCES
    print(f"\ntolerances (largest absolute difference): {tolerances}")
    if not classifier:
        print(f"pasted masks: at most {PASTED_MASK_TOLERANCE:g} of the pixels may differ")
    for fmt, report in reports.items():
        worst = {
            k: max(r["max_abs_diff"][k] for r in report["images"])
            for k in report["images"][0]["max_abs_diff"]
        }
        failed = [r["image"] for r in report["images"] if not r["ok"]]
        detections = ""
        if not classifier:
            pasted = [r["pasted_mask_pixels_differing"] or 0.0 for r in report["images"]]
            worst["pasted mask pixels"] = max(pasted)
            detections = f" ({sum(r['detections'][0] for r in report['images'])} detections)"
        print(
            f"{fmt}: {'OK' if report['ok'] else 'FAILED'} on {len(report['images'])} slices"
            f"{detections}; largest differences "
            f"{', '.join(f'{k} {v:.3g}' for k, v in worst.items())}"
            + (f"; failed: {failed}" if failed else "")
        )


def main(argv=None):
    args = parse_args(argv)
    quiet_third_party_warnings()
    setup_logger(name="ct_lesion_d2")
    setup_logger(name="detectron2", abbrev_name="d2")
    report_path = os.path.join(args.output, "export.json")
    if os.path.exists(report_path) and not args.overwrite:
        raise SystemExit(f"{report_path} exists; pass --overwrite to replace the export")
    cfg = setup(args)
    if cfg.MODEL.DEVICE != "cpu":
        logger.warning("exporting and checking on the CPU (ONNX Runtime runs on the CPU here)")
        cfg = cfg.clone()
        cfg.defrost()
        cfg.MODEL.DEVICE = "cpu"
        cfg.freeze()
    classifier = is_classifier(cfg)
    if args.eval_dataset and classifier:
        raise SystemExit("--eval-dataset computes segmentation AP: give a segmenter config")
    try:
        for fmt in args.format:
            check_exportable(cfg, fmt, args.opset)
    except ExportError as e:
        raise SystemExit(f"{args.config_file}: cannot export: {e}")
    if args.images:
        # read and resized as the test loader does (any slice file: PNG/JPG, DICOM, NIfTI)
        mapper = CTLesionDatasetMapper(cfg, False)
        try:
            inputs = [mapper({"file_name": p}) for p in list_images(args.images, args.max_images)]
        except DatasetFormatError as e:
            raise SystemExit(f"error: {e}")
    else:
        inputs = dataset_inputs(cfg, args.eval_dataset, args.max_images)
    model = load_model(cfg, args.config_file)
    exports = export_all(model, cfg, args, inputs[0]["image"])
    reports = check_exports(model, exports, inputs, classifier)
    print_summary(reports, classifier)
    record = {
        "command": " ".join(sys.argv),
        "config_file": args.config_file,
        "weights": cfg.MODEL.WEIGHTS,
        "fold_bn": not args.no_fold_bn,
        "opset": args.opset,
        "tolerances": CLASSIFIER_TOLERANCES if classifier else SEGMENTATION_TOLERANCES,
        "pasted_mask_tolerance": None if classifier else PASTED_MASK_TOLERANCE,
        "exports": {
            fmt: {"files": files, "export_seconds": seconds, **reports[fmt]}
            for fmt, (_, files, seconds) in exports.items()
        },
    }
    if args.eval_dataset:
        optimized = optimize_for_inference(copy.deepcopy(model))
        runners = {"eager": model, "optimized": optimized}
        runners.update({fmt: runner for fmt, (runner, _, _) in exports.items()})
        record["evaluation"] = {
            "dataset": args.eval_dataset,
            "results": evaluate(cfg, args.eval_dataset, runners),
        }
        for name, result in record["evaluation"]["results"].items():
            aps = ", ".join(
                f"{task} AP {r['AP']:.2f} AP50 {r['AP50']:.2f}" for task, r in result.items()
            )
            print(f"{args.eval_dataset} {name}: {aps}")
    write_json_atomic(record, report_path, overwrite=args.overwrite)
    print(f"report written to {report_path}")
    if not all(r["ok"] for r in reports.values()):
        raise SystemExit(1)
