"""Prediction on real scans: the predictor, the scan report (checked by hand and against the
predictions), tools/predict.py end to end and tools/analyze.py on a dataset split."""

import base64
import json
import os
import re
import shutil

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model
from detectron2.structures import Boxes, BoxMode, Instances
from PIL import Image
from pycocotools import mask as mask_util

from ct_lesion_d2.analysis import aggregate_classes, build_scan_report
from ct_lesion_d2.analysis import dataset_figures as analyze
from ct_lesion_d2.analysis import predict
from ct_lesion_d2.data.readers import Scan, read_scan, write_nifti
from ct_lesion_d2.data.transforms import apply_ct_window
from ct_lesion_d2.engine import CTLesionPredictor, SlicePrediction, build_predict_config
from ct_lesion_d2.model_zoo import get_config
from ct_lesion_d2.visualization import combined_mask_logits, draw_analysis_panel

LIDC = "dicom/lidc_minimal_header/0.dcm"
MIXED = "dicom/tcia_covid19_ny_sbu/A002304/axial"
# small inputs and few RoIs keep the random-weight models fast on the CPU
SMALL = [
    "MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "128",
    "MODEL.RPN.PRE_NMS_TOPK_TEST", "200", "MODEL.RPN.POST_NMS_TOPK_TEST", "60",
    "TEST.DETECTIONS_PER_IMAGE", "6", "MODEL.CT_CLASSIFIER.BATCH_DETECTIONS", "16",
    "DATASETS.TEST", "()",
]  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on a loaded 2-core machine two OpenMP threads make these small
    convolutions about ten times slower (measured: 34 ms against 2.7 ms for a 7x7 conv)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Random-weight segmenter and classifier saved as (config YAML, weights) pairs."""
    folder = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    saved = {}
    for kind, name in (("seg", "mask_rcnn_R18_T2"), ("cls", "classifier_R18_T2")):
        cfg = get_config(name, SMALL)
        model = build_model(cfg)
        weights, config = str(folder / f"{kind}.pth"), str(folder / f"{kind}.yaml")
        torch.save({"model": model.state_dict()}, weights)
        with open(config, "w") as f:
            f.write(cfg.dump())
        saved[kind] = (config, weights)
    return saved


def make_predictor(checkpoints, classifier=False, threshold=0.3):
    cfg = build_predict_config(*checkpoints["seg"], confidence_threshold=threshold)
    cls_cfg = build_predict_config(*checkpoints["cls"]) if classifier else None
    return CTLesionPredictor(cfg, cls_cfg)


def make_series(shared_data, folder, positions):
    """A DICOM series from the real LIDC slice, slice k shifted by 40 * k HU inside the body."""
    src = os.path.join(shared_data, LIDC)
    os.makedirs(folder, exist_ok=True)
    for k, z in enumerate(positions):
        ds = pydicom.dcmread(src)
        pixels = ds.pixel_array.copy()
        pixels[pixels > -1500] += 40 * k
        ds.PixelData = pixels.tobytes()
        ds.ImagePositionPatient = [0.0, 0.0, z]
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.save_as(os.path.join(folder, f"im{len(positions) - k}.dcm"))
    return str(folder)


def fake_prediction(masks, scores, class_probs=None, size=(6, 8)):
    inst = Instances(size)
    masks = torch.as_tensor(np.array(masks, dtype=bool).reshape(-1, *size))
    inst.pred_masks = masks
    inst.scores = torch.tensor(scores, dtype=torch.float32)
    inst.pred_classes = torch.zeros(len(scores), dtype=torch.int64)
    inst.pred_boxes = Boxes(torch.tensor([[0.0, 0.0, 4.0, 3.0]] * len(scores)).reshape(-1, 4))
    inst.pred_mask_logits = torch.zeros(len(scores), 28, 28)
    roi_boxes = torch.tensor([[0.0, 0.0, 2.0, 3.0], [1.0, 1.0, 5.0, 5.0], [0.0, 0.0, 0.0, 0.0]])
    return SlicePrediction(
        inst,
        roi_boxes,
        torch.tensor([0.9, 0.4, 0.0]),
        2,
        "segmenter",
        None if class_probs is None else torch.tensor(class_probs),
    )


def test_scan_report_by_hand():
    a = np.zeros((6, 8), bool)
    a[0:2, 0:3] = True  # 6 pixels
    b = np.zeros((6, 8), bool)
    b[1:3, 2:4] = True  # 4 pixels, 1 shared with a
    c = np.zeros((6, 8), bool)
    c[5, :] = True  # 8 pixels
    scan = Scan(
        np.zeros((3, 6, 8)),
        True,
        (0.5, 0.8),
        2.0,
        ["s0", "s1", "s2"],
        "scan",
        positions_mm=[0.0, 2.0, 4.0],
    )
    predictions = [
        fake_prediction([a, b], [0.9, 0.6]),
        fake_prediction([], []),
        fake_prediction([c], [0.7]),
    ]
    report = build_scan_report(scan, predictions, thing_classes=["Lesion"])
    summary = report["summary"]
    # slice 0: a and b overlap (one lesion); slices 0 and 2 are not neighbours
    assert summary["lesion_count"] == 2 and summary["detection_count"] == 3
    assert summary["slices_with_lesions"] == 2
    assert summary["fraction_slices_with_lesions"] == pytest.approx(2 / 3, abs=1e-6)
    # slice 0: union 6 + 4 - 1 = 9 pixels; slice 2: 8 pixels; pixel area 0.4 mm^2
    assert [s["lesion_area_px"] for s in report["slices"]] == [9, 0, 8]
    assert summary["lesion_area_px"] == 17 and summary["lesion_area_mm2"] == pytest.approx(6.8)
    first = report["slices"][0]["detections"]
    assert [x["area_px"] for x in first] == [6, 4] and first[1]["area_mm2"] == pytest.approx(1.6)
    assert np.array_equal(mask_util.decode(first[1]["mask_rle"]), b)
    assert report["slices"][2]["position_mm"] == 4.0
    assert report["slices"][0]["roi_batch"]["box_areas_px"] == [6.0, 16.0, 0.0]
    assert summary["scan_class"] is None and "no classifier" in summary["scan_class_note"]
    assert report["image_classes"] is None and report["slices"][0]["class_probabilities"] is None
    json.dumps(report)  # JSON-ready
    # without a spacing there is no mm^2
    scan.spacing_mm = None
    report = build_scan_report(scan, predictions, thing_classes=["Lesion"])
    assert report["summary"]["lesion_area_mm2"] is None


def test_aggregation_rules_by_hand():
    names = ["Control", "Common Pneumonia", "COVID-19"]
    probs = [[0.6, 0.1, 0.3], [0.55, 0.1, 0.4], [0.1, 0.1, 0.95]]
    mean = aggregate_classes(probs, names, "mean")
    assert mean["class"] == "COVID-19"  # means 0.4167, 0.1, 0.55
    assert mean["probabilities"]["Control"] == pytest.approx(1.25 / 3, abs=1e-6)
    assert mean["slice_votes"] == {"Control": 2, "Common Pneumonia": 0, "COVID-19": 1}
    assert aggregate_classes(probs, names, "majority")["class"] == "Control"
    # a tie in votes goes to the larger mean probability
    tie = aggregate_classes([[0.9, 0.0, 0.1], [0.0, 0.2, 0.95]], names, "majority")
    assert tie["class"] == "COVID-19" and "ties" in tie["description"]
    with pytest.raises(ValueError, match="unknown aggregation rule"):
        aggregate_classes(probs, names, "max")


def test_combined_mask_logits_by_hand():
    ramp = torch.linspace(-3, 3, 28).repeat(28, 1)  # logits rising from left to right
    flat = torch.full((28, 28), 5.0)
    boxes = torch.tensor([[10.0, 4.0, 38.0, 12.0], [30.0, 8.0, 40.0, 20.0]])
    combined = combined_mask_logits(torch.stack([ramp, flat]), boxes, (24, 50))
    assert combined.shape == (24, 50)
    inside = np.zeros((24, 50), bool)
    inside[4:12, 10:38] = inside[8:20, 30:40] = True
    assert np.array_equal(np.isfinite(combined), inside)
    assert np.all(np.diff(combined[5, 10:30]) > 0)  # the ramp keeps its direction
    assert combined[5, 10] < -2.5 and combined[5, 29] > 0
    assert np.allclose(combined[8:12, 30:40], 5.0)  # overlap: the larger logit wins
    assert np.allclose(combined[15, 30:40], 5.0)


def test_predictor_dicom_equals_png_export_and_keeps_raw_logits(checkpoints, shared_data, tmp_path):
    predictor = make_predictor(checkpoints)
    scan = read_scan(os.path.join(shared_data, LIDC))
    png = tmp_path / "lidc.png"
    Image.fromarray(apply_ct_window(scan.pixels[0])).save(png)
    (from_dicom,) = predictor(scan.pixels, True)
    (from_png,) = predictor(read_scan(str(png)).pixels, False)
    inst = from_dicom.instances
    assert 0 < len(inst) <= 6 and inst.pred_masks.shape[1:] == (512, 512)
    assert torch.equal(inst.scores, from_png.instances.scores)
    assert torch.equal(inst.pred_masks, from_png.instances.pred_masks)
    assert from_dicom.roi_source == "segmenter" and from_dicom.class_probs is None
    assert from_dicom.roi_scores.shape == (16,) and from_dicom.roi_boxes.shape == (16, 4)
    assert torch.all(from_dicom.roi_scores[:-1] >= from_dicom.roi_scores[1:])
    assert from_dicom.roi_boxes[:, 2:].max() <= 512
    # the kept logits are those of the mask head: their sigmoid is Detectron2's mask probability
    model = predictor.model
    inputs = predictor._inputs(scan.pixels, True, predictor.window, predictor.cfg, ["lidc"])
    with torch.no_grad():
        (raw,) = model.inference(inputs, do_postprocess=False)
    assert len(raw) == len(inst)
    assert torch.allclose(inst.pred_mask_logits.sigmoid(), raw.pred_masks[:, 0], atol=1e-6)
    assert torch.allclose(inst.scores, raw.scores)
    # the logits are kept by a hook that lives only during the pass
    assert not any(m._forward_hooks for m in model.modules())


def test_batches_and_classifier(checkpoints, shared_data, tmp_path):
    scan = read_scan(make_series(shared_data, tmp_path / "series", [0.0, 2.0, 4.0]))
    predictor = make_predictor(checkpoints, classifier=True)
    one = predictor.predict_scan(scan, batch_size=1, progress=False)
    three = predictor.predict_scan(scan, batch_size=3, progress=False)
    for a, b in zip(one, three):
        assert len(a.instances) == len(b.instances)
        assert torch.allclose(a.instances.scores, b.instances.scores, atol=1e-4)
        assert torch.allclose(a.class_probs, b.class_probs, atol=1e-4)
    assert predictor.class_names == ["Control", "Common Pneumonia", "COVID-19"]
    assert all(p.roi_source == "classifier" and p.class_probs.shape == (3,) for p in one)
    assert all(p.roi_scores.shape == (16,) for p in one)
    with pytest.raises(ValueError, match="batch_size"):
        predictor.predict_scan(scan, batch_size=0)


def test_a_slice_gets_the_same_prediction_beside_slices_of_other_sizes(checkpoints):
    """PNG slices come in many sizes; a batch would pad them to the largest, and the padding
    would change the detections of the others: each size runs apart."""
    predictor = make_predictor(checkpoints, classifier=True, threshold=0.0)
    rng = np.random.default_rng(0)
    wide, tall = (rng.integers(0, 256, shape).astype(np.uint8) for shape in [(60, 130), (150, 90)])
    (alone,) = predictor([wide], is_hu=False)
    beside = predictor([tall, wide, tall], is_hu=False)
    assert len(alone.instances) > 0
    for a, b in ((alone, beside[1]), (beside[0], beside[2])):
        torch.testing.assert_close(a.instances.scores, b.instances.scores)
        torch.testing.assert_close(a.instances.pred_boxes.tensor, b.instances.pred_boxes.tensor)
        torch.testing.assert_close(a.roi_scores, b.roi_scores)
        torch.testing.assert_close(a.class_probs, b.class_probs)
    assert beside[1].instances.image_size == wide.shape


def run_predict(checkpoints, inputs, output, *extra):
    seg_config, seg_weights = checkpoints["seg"]
    argv = [
        "--config-file",
        seg_config,
        "--weights",
        seg_weights,
        "--input",
        *inputs,
        "--output",
        str(output),
        "--confidence-threshold",
        "0.3",
        "--no-progress",
        "--batch-size",
        "2",
        *extra,
    ]
    return predict.main(argv)


def test_predict_tool_report_matches_predictions(checkpoints, shared_data, tmp_path):
    series = make_series(shared_data, tmp_path / "patient", [5.0, 0.0, 2.5])
    lidc = os.path.join(shared_data, LIDC)
    out = tmp_path / "out"
    paths = run_predict(checkpoints, [lidc, series], out, "--max-panels", "1")
    assert [os.path.relpath(p, out) for p in paths] == [
        "lidc_minimal_header_0/report.json",
        "patient/report.json",
    ]
    predictor = make_predictor(checkpoints)
    for path, source in zip(paths, (lidc, series)):
        report = json.load(open(path))
        scan = read_scan(source)
        expected = predictor.predict_scan(scan, progress=False)
        assert report["schema"] == "ct_lesion_d2.scan_report/2"
        assert report["scan"]["input_units"] == "HU" and report["scan"]["spacing_mm"] == [0.625] * 2
        assert report["settings"]["confidence_threshold"] == 0.3
        assert report["settings"]["segmenter"]["window"] == {"level": -600.0, "width": 1500.0}
        assert [s["name"] for s in report["slices"]] == scan.slice_names
        for entry, prediction in zip(report["slices"], expected):
            inst = prediction.instances
            assert entry["detection_count"] == len(inst)
            assert [x["score"] for x in entry["detections"]] == pytest.approx(
                inst.scores.tolist(), abs=1e-5
            )
            decoded = np.stack([mask_util.decode(x["mask_rle"]) for x in entry["detections"]])
            assert np.array_equal(decoded.astype(bool), inst.pred_masks.numpy())
            union = int(inst.pred_masks.any(dim=0).sum())
            assert entry["lesion_area_px"] == union
            assert entry["lesion_area_mm2"] == pytest.approx(union * 0.625**2, abs=1e-3)
            assert entry["roi_batch"]["scores"] == pytest.approx(
                prediction.roi_scores.tolist(), abs=1e-5
            )
            assert entry["class_probabilities"] is None
        summary = report["summary"]
        assert summary["detection_count"] == sum(len(p.instances) for p in expected)
        assert summary["lesion_count"] == len(report["lesions"])
        assert summary["lesion_area_px"] == sum(s["lesion_area_px"] for s in report["slices"])
        with_lesions = sum(1 for p in expected if len(p.instances))
        assert summary["fraction_slices_with_lesions"] == pytest.approx(
            with_lesions / len(expected)
        )
        assert summary["scan_class"] is None and "no classifier" in summary["scan_class_note"]
    # slices in patient order: positions 0, 2.5, 5 whatever the file names
    report = json.load(open(paths[1]))
    assert [s["position_mm"] for s in report["slices"]] == [0.0, 2.5, 5.0]
    assert [s["name"] for s in report["slices"]] == ["im2.dcm", "im1.dcm", "im3.dcm"]
    # --max-panels 1: figures for the slice with the most lesion area, embedded in the page
    with_panels = [s for s in report["slices"] if s["panel"]]
    areas = [s["lesion_area_px"] for s in report["slices"]]
    assert len(with_panels) == 1 and with_panels[0]["lesion_area_px"] == max(areas)
    page = open(out / "patient" / "report.html", encoding="utf-8").read()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 2 and "http" not in page.replace("http-equiv", "")
    for entry in with_panels:
        panel = np.asarray(Image.open(out / "patient" / entry["panel"]))
        assert panel.ndim == 3 and panel.shape[1] > 2 * panel.shape[0]
        assert (
            base64.b64encode(open(out / "patient" / entry["panel"], "rb").read()).decode() in images
        )
        assert os.path.isfile(out / "patient" / entry["roi_figure"])
    assert "no classifier given" in page and "Figures of 2 slices are not included" in page
    # DICOM geometry known: the sides of the pictures are stated (radiological view)
    assert report["scan"]["image_sides"] == {"left": "R", "right": "L", "top": "A", "bottom": "P"}
    assert report["scan"]["image_geometry_note"] is None
    assert "image sides left: R, right: L, top: A, bottom: P (radiological view" in page

    # never overwritten without --overwrite
    with pytest.raises(SystemExit, match="exist and are not empty; pass --overwrite"):
        run_predict(checkpoints, [lidc], out)
    run_predict(checkpoints, [lidc], out, "--overwrite", "--max-panels", "0")
    assert json.load(open(paths[0]))["slices"][0]["panel"] is None
    assert not os.listdir(out / "lidc_minimal_header_0" / "panels")


def test_predict_tool_mixed_series_and_classifier(checkpoints, shared_data, tmp_path):
    mixed = os.path.join(shared_data, MIXED)
    with pytest.raises(SystemExit, match="mixes 2 DICOM series.*--all-series"):
        run_predict(checkpoints, [mixed], tmp_path / "a")
    cls_config, cls_weights = checkpoints["cls"]
    pngs = tmp_path / "pngs"  # --all-series leaves folders of image slices whole
    pngs.mkdir()
    for name in ("medseg_010.png", "medseg_009.png"):
        shutil.copy(os.path.join(shared_data, "medseg100", "images", name), pngs)
    paths = run_predict(
        checkpoints,
        [mixed, str(pngs)],
        tmp_path / "b",
        "--all-series",
        "--classifier-config",
        cls_config,
        "--classifier-weights",
        cls_weights,
        "--aggregation",
        "majority",
        "--max-panels",
        "0",
    )
    assert [os.path.basename(os.path.dirname(p)) for p in paths] == [
        "axial_series1",
        "axial_series2",
        "pngs",
    ]
    report = json.load(open(paths[2]))
    assert [s["name"] for s in report["slices"]] == ["medseg_009.png", "medseg_010.png"]
    assert (
        report["scan"]["input_units"] == "uint8_windowed" and report["scan"]["spacing_mm"] is None
    )
    assert report["summary"]["lesion_area_mm2"] is None
    # image slices: no orientation, no scale, and the report says so
    assert report["scan"]["image_sides"] is None
    assert report["scan"]["image_geometry_note"] == "geometry unknown: no orientation, no scale"
    page = open(os.path.join(os.path.dirname(paths[2]), "report.html"), encoding="utf-8").read()
    assert "unknown (not in the input): no orientation letters in the figures; no pixel" in page
    votes = report["summary"]["scan_class"]["slice_votes"]
    assert sum(votes.values()) == 2
    uids = set()
    for path in paths[:2]:
        report = json.load(open(path))
        uids.add(report["scan"]["series_uid"])
        (entry,) = report["slices"]
        probs = entry["class_probabilities"]
        assert set(probs) == {"Control", "Common Pneumonia", "COVID-19"}
        assert entry["roi_batch"]["source"] == "classifier"
        scan_class = report["summary"]["scan_class"]
        assert scan_class["rule"] == "majority" and scan_class["class"] == max(probs, key=probs.get)
        assert scan_class["probabilities"] == pytest.approx(probs)
        assert report["settings"]["classifier"]["weights"] == cls_weights
        seg = pydicom.dcmread(os.path.join(os.path.dirname(path), "lesions_seg.dcm"))
        assert report["outputs"]["dicom_seg"]["file"] == "lesions_seg.dcm"
        (source,) = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
        uid = report["scan"]["series_uid"]
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == uid
        assert (
            source.ReferencedSOPInstanceUID
            == pydicom.dcmread(os.path.join(mixed, entry["name"])).SOPInstanceUID
        )
    assert len(uids) == 2


def test_predict_tool_on_nifti(checkpoints, shared_data, tmp_path):
    scan = read_scan(os.path.join(shared_data, LIDC))
    volume = str(tmp_path / "chest.nii.gz")
    write_nifti(scan, volume)
    (path,) = run_predict(checkpoints, [volume], tmp_path / "out", "--max-panels", "0")
    report = json.load(open(path))
    assert os.path.basename(os.path.dirname(path)) == "chest"
    assert report["scan"]["spacing_mm"] == pytest.approx([0.625, 0.625])
    assert report["scan"]["input_units"] == "HU"
    (entry,) = report["slices"]
    assert entry["name"] == "chest.nii.gz[0]"
    (expected,) = make_predictor(checkpoints)(scan.pixels, True)
    assert entry["detection_count"] == len(expected.instances)
    assert entry["lesion_area_mm2"] == pytest.approx(entry["lesion_area_px"] * 0.390625, abs=1e-3)
    # the label map lies on the input's grid; its values are the lesion ids of the report
    mask = nib.load(os.path.join(os.path.dirname(path), "lesions.nii.gz"))
    source = nib.load(volume)
    assert mask.shape == source.shape and np.allclose(mask.affine, source.affine)
    ids = set(np.unique(np.asarray(mask.dataobj)).tolist()) - {0}
    assert ids == {x["id"] for x in report["lesions"]}
    assert int((np.asarray(mask.dataobj) > 0).sum()) == entry["lesion_area_px"]
    assert report["outputs"]["dicom_seg"]["file"] is None
    assert report["scan"]["image_sides"] == {"left": "R", "right": "L", "top": "A", "bottom": "P"}
    # the report's top: pseudonymous name, model card with the weights' hash, date; files 0644
    import hashlib
    import stat

    assert report["scan"]["source"] == "chest.nii.gz"
    card = report["settings"]["model_card"]
    weights = checkpoints["seg"][1]
    assert card["weights_sha256"] == hashlib.sha256(open(weights, "rb").read()).hexdigest()
    assert card["name"] == "seg" and card["training_data"] is None
    page = open(os.path.join(os.path.dirname(path), "report.html"), encoding="utf-8").read()
    assert "Lesion report: chest.nii.gz<" in page and str(tmp_path) not in page
    assert card["weights_sha256"][:16] in page and report["settings"]["created"] in page
    umask = os.umask(0)
    os.umask(umask)
    folder = os.path.dirname(path)
    for name in ("report.json", "report.html", "lesions.nii.gz"):
        assert stat.S_IMODE(os.stat(os.path.join(folder, name)).st_mode) == 0o666 & ~umask
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o777 & ~umask


def test_analysis_panel_layout(checkpoints, shared_data):
    predictor = make_predictor(checkpoints, classifier=True)
    scan = read_scan(os.path.join(shared_data, LIDC))
    (prediction,) = predictor(scan.pixels, True)
    grey = predictor.display_image(scan.pixels[0], True)
    meta = MetadataCatalog.get("ct_lesion_test_panel_layout").set(thing_classes=["Lesion"])
    full = draw_analysis_panel(
        grey, prediction, meta, predictor.class_names, record={"annotations": []}
    )
    prediction.class_probs = None
    bare = draw_analysis_panel(grey, prediction, meta)
    # the ground-truth and classifier columns shrink to notes when there is nothing to show
    assert full.shape[0] == bare.shape[0] and full.shape[1] > bare.shape[1]
    # the mask probability is drawn in viridis (teal to yellow: green above red)
    rgb = full.astype(int)
    assert (rgb[..., 1] - rgb[..., 0] > 60).sum() > 100


def test_analyze_tool_on_a_dataset_split(checkpoints, shared_data, tmp_path):
    records = []
    for k, name in enumerate(["medseg_005", "medseg_009"]):
        mask = np.asarray(
            Image.open(os.path.join(shared_data, "medseg100", "masks", f"{name}.png"))
        )
        rle = mask_util.encode(np.asfortranarray((mask > 0).astype(np.uint8)))
        records.append(
            {
                "file_name": os.path.join(shared_data, "medseg100", "images", f"{name}.png"),
                "image_id": k,
                "height": 512,
                "width": 512,
                "annotations": [
                    {
                        "bbox": mask_util.toBbox(rle).tolist(),
                        "bbox_mode": BoxMode.XYWH_ABS,
                        "category_id": 0,
                        "segmentation": rle,
                    }
                ],
            }
        )
    name = "ct_lesion_test_analyze"
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(thing_classes=["Lesion"])
    try:
        seg_config, seg_weights = checkpoints["seg"]
        out = tmp_path / "analysis"
        argv = ["--config-file", seg_config, "--weights", seg_weights, "--dataset", name]
        path = analyze.main(argv + ["--output", str(out), "--confidence-threshold", "0.3"])
        result = json.load(open(path))
        assert (
            result["summary"]["num_slices"] == 2 and result["summary"]["ground_truth_lesions"] == 2
        )
        for entry in result["slices"]:
            assert entry["ground_truth_lesions"] == 1
            assert entry["roi_batch"]["source"] == "segmenter"
            assert os.path.isfile(out / entry["panel"]) and os.path.isfile(
                out / entry["roi_figure"]
            )
        with pytest.raises(SystemExit, match="not empty"):
            analyze.main(
                [
                    "--config-file",
                    seg_config,
                    "--weights",
                    seg_weights,
                    "--dataset",
                    name,
                    "--output",
                    str(out),
                ]
            )
    finally:
        DatasetCatalog.pop(name)
        MetadataCatalog.pop(name)


def test_analyze_per_class_takes_the_first_slices_of_every_class():
    records = [
        {"file_name": f"{k}.png", "class_id": c} for k, c in enumerate([0, 0, 0, 2, 0, 2, 2])
    ]
    chosen = analyze.first_per_class(records, 2, "ucsd")
    assert [r["file_name"] for r in chosen] == ["0.png", "1.png", "3.png", "5.png"]
    with pytest.raises(ValueError, match="needs a classification dataset.*--max-slices"):
        analyze.first_per_class([{"file_name": "a.png"}], 2, "ct_lesion_medseg100_val")
