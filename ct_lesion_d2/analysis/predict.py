"""Predict COVID-19 lesions (and, with a classifier, the slice class) on patients' scans.

The command line of ``tools/predict.py``.

Inputs: PNG/JPG slices or folders of them, DICOM files, DICOM series folders, NIfTI volumes.
For each scan, writes under ``--output/<scan>/``: ``report.json`` (schema in docs/PREDICT.md),
``report.html`` (self-contained), ``panels/`` (per-slice analysis figures, PNG), the lesion
label map ``lesions.nii.gz`` on the input's grid and, for DICOM input, the DICOM SEG
``lesions_seg.dcm`` referencing the source slices. The folder is written beside its place and
swapped in when complete; an existing one is replaced only with ``--overwrite``.

    python tools/predict.py --config-file configs/mask_rcnn_R18_T1_FPN1_medseg100_cpu.yaml \\
        --weights output/.../model_final.pth --input scans/patient1/ ct.nii.gz --output reports
    python tools/predict.py ... --classifier-config configs/classifier_R18_T1_covidx.yaml \\
        --classifier-weights output/classifier_R18_T1_covidx/model_final.pth
    python tools/predict.py --classifier-model ct_classifier_R18_T1_ucsd --input slice.png \\
        --output reports          # the zoo segmenter and the zoo's UCSD slice classifier
"""

import argparse
import logging
import os
import sys
import warnings

from detectron2.utils.logger import setup_logger

from .. import __version__
from ..data.datasets.metadata import lesion_metadata
from ..data.io import DatasetFormatError
from ..data.readers.geometry import non_axial_input, scan_geometry
from ..data.readers.image_input import UNITS, ImageInputOptions
from ..engine.predictor import CTLesionPredictor, build_predict_config
from ..engine.weights_check import WeightsError, build_checked_model
from ..model_zoo import (
    DEFAULT_ZOO_MODEL,
    ZOO_MODELS,
    ZooModelError,
    config_path,
    zoo_models,
    zoo_weights,
)
from ..utils.cli import config_error_line, positive_int, probability, quiet_third_party_warnings
from ..utils.files import StagedFolder, atomic_write, recover_folder, write_json_atomic
from ..visualization.analysis import save_slice_figures
from ..visualization.lesion_overlay import slice_view
from .html_report import png_bytes, render_scan_html
from .lesions import find_lesions
from .mask_export import export_lesion_masks
from .model_card import apply_umask, model_card, now_utc, pseudonymous_source
from .scan_plan import plan_scans, safe_name, select_panels, strip_extension
from .scan_report import AGGREGATION_RULES, build_scan_report

logger = logging.getLogger("ct_lesion_d2.predict")


def add_model_arguments(parser):
    """The model options of predict.py and analyze.py (see :func:`build_configs`)."""
    parser.add_argument(
        "--model",
        choices=zoo_models("segmentation"),
        metavar="NAME",
        help=f"a model-zoo segmenter (docs/MODEL_ZOO.md; default {DEFAULT_ZOO_MODEL} when no "
        "--config-file is given)",
    )
    parser.add_argument("--config-file", metavar="FILE", help="segmentation config")
    parser.add_argument("--weights", help="segmentation checkpoint (else MODEL.WEIGHTS)")
    parser.add_argument(
        "--classifier-model",
        choices=zoo_models("classification"),
        metavar="NAME",
        help="a model-zoo classifier (docs/MODEL_ZOO.md: "
        f"{', '.join(zoo_models('classification'))}), instead of --classifier-config",
    )
    parser.add_argument("--classifier-config", metavar="FILE", help="CTMaskNetClassifier config")
    parser.add_argument(
        "--classifier-weights", help="classifier checkpoint (else its MODEL.WEIGHTS)"
    )
    parser.add_argument(
        "--confidence-threshold",
        type=probability,
        default=0.5,
        help="lowest lesion confidence kept (MODEL.ROI_HEADS.SCORE_THRESH_TEST)",
    )
    parser.add_argument("--device", help="cpu, cuda, cuda:N (default: the config's MODEL.DEVICE)")
    parser.add_argument(
        "--batch-size", type=positive_int, default=4, help="slices per forward pass"
    )
    parser.add_argument(
        "--verbose", action="store_true", help="also show DEBUG lines (key lists, settings)"
    )


def build_configs(args):
    """The segmentation config and, with ``--classifier-config``, the classifier's (on the
    segmenter's device), from the options of :func:`add_model_arguments` and the KEY VALUE
    overrides. A missing file, an unknown key (with the closest valid one) or a classifier
    config given as the segmenter's stop with one line."""
    if args.classifier_model:
        if args.classifier_config or args.classifier_weights:
            sys.exit(
                "error: give either --classifier-model (a zoo classifier) or "
                "--classifier-config/--classifier-weights, not both"
            )
        args.classifier_config, args.classifier_weights = _zoo_files(args.classifier_model)
    if args.config_file is None:
        if args.weights:
            sys.exit(
                "error: --weights needs the --config-file it was trained with (or use "
                "--model NAME for a model-zoo segmenter)"
            )
        args.model = args.model or DEFAULT_ZOO_MODEL
        args.config_file, args.weights = _zoo_files(args.model)
    elif args.model:
        sys.exit("error: give either --model (a zoo model) or --config-file, not both")
    current = args.config_file
    try:
        cfg = build_predict_config(
            args.config_file, args.weights, args.opts, args.device, args.confidence_threshold
        )
        classifier_cfg = None
        if args.classifier_config:
            current = args.classifier_config
            classifier_cfg = build_predict_config(
                args.classifier_config, args.classifier_weights, device=cfg.MODEL.DEVICE
            )
    except (KeyError, AssertionError, ValueError, TypeError, FileNotFoundError) as e:
        line = config_error_line(e, current)
        if line is None:
            raise
        sys.exit(f"error: {line}")
    if not cfg.MODEL.MASK_ON:
        sys.exit(
            f"error: {args.config_file}: a {cfg.MODEL.META_ARCHITECTURE} config without masks "
            "(MODEL.MASK_ON False); give a segmentation config as --config-file and a classifier "
            "config as --classifier-config"
        )
    return cfg, classifier_cfg


def _zoo_files(name):
    """(config file, checked weights) of a zoo model; a damaged file stops with one line."""
    try:
        weights = zoo_weights(name)
    except ZooModelError as e:
        sys.exit(f"error: {e}")
    logger.info("Model: zoo model %s (%s)", name, weights)
    return config_path(ZOO_MODELS[name]["config"]), weights


def load_predictor(args, cfg, classifier_cfg):
    """The predictor of :func:`build_configs`' configs, its weights checked against each model
    (``build_checked_model``); weights that do not fit stop with one line."""
    try:
        segmenter = build_checked_model(cfg, args.config_file)
        classifier = (
            build_checked_model(classifier_cfg, args.classifier_config) if classifier_cfg else None
        )
    except WeightsError as e:
        sys.exit(f"error: {e}")
    return CTLesionPredictor(cfg, classifier_cfg, models=(segmenter, classifier))


def setup_console(verbose):
    """The known third-party notices off, and Detectron2's logger for the package; the
    terminal shows INFO and above, unless ``verbose`` (``--verbose``)."""
    quiet_third_party_warnings()
    for handler in setup_logger(name="ct_lesion_d2").handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(
            handler, logging.FileHandler
        ):
            handler.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("PIL").setLevel(logging.WARNING)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_arguments(parser)
    parser.add_argument(
        "--input", nargs="+", required=True, help="files or folders; each one is a scan"
    )
    parser.add_argument("--output", required=True, help="folder for one sub-folder per scan")
    parser.add_argument(
        "--aggregation",
        choices=sorted(AGGREGATION_RULES),
        default="mean",
        help="scan-level class rule (needs a classifier)",
    )
    parser.add_argument(
        "--input-units",
        choices=UNITS,
        default="windowed",
        help="image slices: 'windowed' 8-bit slices (16-bit and float refused) or 'hu' "
        "16-bit/float slices holding HU + --hu-offset",
    )
    parser.add_argument(
        "--hu-offset",
        type=float,
        help="with --input-units hu: the offset the exporter added (1024 for HU + 1024)",
    )
    parser.add_argument(
        "--accept-non-axial",
        action="store_true",
        help="run on a single coronal or sagittal slice or on oblique slices as stored "
        "(refused otherwise: the models are trained on axial slices; coronal and sagittal "
        "volumes are resampled to axial slices without it)",
    )
    parser.add_argument("--series-uid", help="the series to read from a folder of several")
    parser.add_argument(
        "--all-series",
        action="store_true",
        help="read every series of a DICOM folder as its own scan",
    )
    parser.add_argument(
        "--max-panels",
        type=int,
        default=50,
        help="slices with figures per scan: all when the scan has no more, else "
        "those with the largest lesion area",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the folders of existing reports"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--full-paths",
        action="store_true",
        help="name the input by its full path in the report (default: its base name only, "
        "since paths often hold patient IDs)",
    )
    parser.add_argument(
        "opts",
        nargs=argparse.REMAINDER,
        help="segmentation config overrides, KEY VALUE pairs (after the options)",
    )
    args = parser.parse_args(argv)
    if args.hu_offset is not None and args.input_units != "hu":
        parser.error("--hu-offset needs --input-units hu")
    return args


def write_scan_report(predictor, scan, folder, args, metadata, settings):
    """Predict one scan and write its JSON, panels and HTML page into ``folder``."""
    predictions = predictor.predict_scan(scan, args.batch_size, progress=not args.no_progress)
    lesions = find_lesions(
        [p.instances for p in predictions],
        score_threshold=settings["confidence_threshold"],
        spacing_mm=scan.spacing_mm,
        positions_mm=scan.positions_mm,
    )
    report = build_scan_report(
        scan,
        predictions,
        thing_classes=metadata.thing_classes,
        class_names=predictor.class_names,
        rule=args.aggregation,
        settings=settings,
        lesions=lesions,
    )
    report["scan"]["source"] = pseudonymous_source(scan.source, args.full_paths)
    geometry = scan_geometry(scan)
    view = slice_view(geometry, scan.spacing_mm)
    report["scan"]["image_sides"] = view.sides
    report["scan"]["image_geometry_note"] = view.note or None
    report["outputs"] = export_lesion_masks(
        scan,
        lesions.labels,
        folder,
        software_version=__version__,
        model_name=os.path.splitext(os.path.basename(args.config_file))[0],
        geometry=geometry,
    )
    scores = {x["id"]: x["max_score"] for x in lesions.lesions}
    panels = os.path.join(folder, "panels")
    os.makedirs(panels, exist_ok=True)
    figures = {}
    for index in select_panels(report, args.max_panels):
        name, entry = scan.slice_names[index], report["slices"][index]
        grey = predictor.display_image(scan.pixels[index], scan.is_hu)
        saved = save_slice_figures(
            panels,
            f"{index:04d}_{safe_name(strip_extension(name))}",
            grey,
            predictions[index],
            metadata,
            predictor.class_names,
            title=f"slice {index}: {name}",
            score_threshold=settings["confidence_threshold"],
            lesions=(lesions.labels[index], scores),
            view=view,
            mask_threshold=settings["mask_threshold"],
        )
        entry["panel"] = os.path.relpath(saved["panel"][0], folder)
        entry["roi_figure"] = os.path.relpath(saved["rois"][0], folder)
        figures[index] = [
            ("analysis panel", png_bytes(saved["panel"][1])),
            ("RoI statistics", png_bytes(saved["rois"][1])),
        ]
    write_json_atomic(report, os.path.join(folder, "report.json"), overwrite=True)
    page = render_scan_html(report, figures)
    atomic_write(os.path.join(folder, "report.html"), lambda f: f.write(page.encode("utf-8")))
    return report


def _settings(args, cfg, classifier_cfg):
    def model(c, config_file):
        if c is None:
            return None
        return {
            "config_file": config_file,
            "weights": c.MODEL.WEIGHTS,
            "meta_architecture": c.MODEL.META_ARCHITECTURE,
            "input_units": c.INPUT.CT_INPUT_UNITS,
            "window": {"level": c.INPUT.CT_WINDOW.LEVEL, "width": c.INPUT.CT_WINDOW.WIDTH},
        }

    return {
        "ct_lesion_d2_version": __version__,
        "created": now_utc(),
        "model_card": model_card(args.config_file, cfg.MODEL.WEIGHTS),
        "segmenter": model(cfg, args.config_file),
        "classifier": model(classifier_cfg, args.classifier_config),
        "device": cfg.MODEL.DEVICE,
        "confidence_threshold": cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST,
        "mask_threshold": 0.5,
        "roi_batch_size": (classifier_cfg or cfg).MODEL.CT_CLASSIFIER.BATCH_DETECTIONS,
        "aggregation": args.aggregation,
        "batch_size": args.batch_size,
        "image_input": {"units": args.input_units, "hu_offset": args.hu_offset},
        "accept_non_axial": args.accept_non_axial,
    }


def main(argv=None):
    """Run the tool; returns the reports written. Ctrl-C stops with the list of complete ones."""
    args = parse_args(argv)
    setup_console(args.verbose)
    if args.classifier_weights and not args.classifier_config:
        sys.exit("error: --classifier-weights needs --classifier-config")
    if os.path.exists(args.output) and not os.path.isdir(args.output):
        sys.exit(f"error: --output {args.output} is a file; give a folder (made if missing)")
    reports = []
    try:
        return _run(args, reports)
    except KeyboardInterrupt:
        kept = ", ".join(reports) if reports else "none"
        print(
            f"interrupted: {len(reports)} complete reports kept ({kept}); the scan in "
            "progress left nothing",
            file=sys.stderr,
        )
        sys.exit(130)


def _run(args, reports):
    """:func:`main` after the checks of its arguments; appends each complete report to
    ``reports`` as it is written."""
    cfg, classifier_cfg = build_configs(args)
    image_options = ImageInputOptions(
        units=args.input_units,
        hu_offset=args.hu_offset,
        model_size=(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST),
    )
    try:
        plan = plan_scans(args.input, args.series_uid, args.all_series, image_options)
    except DatasetFormatError as e:
        sys.exit(f"error: {e}")
    folders = [os.path.join(args.output, name) for name, _ in plan]
    for folder in folders:
        for line in recover_folder(folder):
            logger.warning(line)
    taken = [f for f in folders if os.path.isdir(f) and os.listdir(f)]
    if taken and not args.overwrite:
        sys.exit(f"error: {', '.join(taken)} exist and are not empty; pass --overwrite")
    predictor = load_predictor(args, cfg, classifier_cfg)
    metadata, settings = lesion_metadata(cfg), _settings(args, cfg, classifier_cfg)
    for (name, reader), folder in zip(plan, folders):
        try:
            with warnings.catch_warnings():  # said below, as a refusal or in the report
                warnings.filterwarnings("ignore", message=".*; kept as stored$")
                scan = reader()
        except DatasetFormatError as e:
            sys.exit(f"error: {e}")
        not_axial = non_axial_input(scan)
        if not_axial and not args.accept_non_axial:
            sys.exit(
                f"error: {scan.source}: {not_axial}; the model is trained on axial slices — "
                "pass --accept-non-axial to run it anyway"
            )
        if not_axial:
            logger.warning(f"{name}: {not_axial}; run as stored (--accept-non-axial)")
        # Written beside the scan's folder and swapped in when complete: an interruption
        # leaves the previous report (or none), never a mix.
        try:
            with StagedFolder(folder) as staged:
                report = write_scan_report(predictor, scan, staged.path, args, metadata, settings)
                apply_umask(staged.path)
                staged.commit()
        except OSError as e:  # read-only or full disk, permissions
            sys.exit(f"error: {folder}: cannot write the report ({e.strerror or e})")
        s = report["summary"]
        scan_class = s["scan_class"]["class"] if s["scan_class"] else "n/a (no classifier)"
        logger.info(
            f"{name}: {s['num_slices']} slices, {s['lesion_count']} lesions, "
            f"{s['slices_with_lesions']} slices with lesions, scan class {scan_class} -> {folder}"
        )
        reports.append(os.path.join(folder, "report.json"))
    return reports
