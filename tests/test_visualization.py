"""Visualizer panels: prediction beside ground truth, low scores hidden, no silent overwrite."""

import os

import numpy as np
import pytest
import torch
from detectron2.data import MetadataCatalog
from detectron2.structures import Boxes, BoxMode, Instances
from PIL import Image

from ct_lesion_d2.visualization import save_prediction_panels

NAME = "ct_lesion_test_panels"


def fake_predictor(image_bgr):
    h, w = image_bgr.shape[:2]
    inst = Instances((h, w))
    inst.pred_boxes = Boxes(torch.tensor([[10.0, 10.0, 60.0, 50.0], [70.0, 70.0, 90.0, 90.0]]))
    inst.scores = torch.tensor([0.9, 0.1])
    inst.pred_classes = torch.tensor([0, 0])
    masks = torch.zeros(2, h, w, dtype=torch.bool)
    masks[0, 10:50, 10:60] = True
    masks[1, 70:90, 70:90] = True
    inst.pred_masks = masks
    return {"instances": inst}


@pytest.fixture
def record(tmp_path):
    path = tmp_path / "slice.png"
    Image.fromarray(np.full((120, 100), 60, dtype=np.uint8)).save(path)
    MetadataCatalog.get(NAME).set(thing_classes=["Lesion"])
    yield {
        "file_name": str(path),
        "height": 120,
        "width": 100,
        "annotations": [
            {"bbox": [10, 10, 50, 40], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0}
        ],
    }
    MetadataCatalog.pop(NAME)


def test_panel_shows_prediction_and_ground_truth(record, tmp_path):
    out = tmp_path / "panels"
    (path,) = save_prediction_panels(fake_predictor, [record], NAME, str(out))
    panel = np.asarray(Image.open(path).convert("RGB"))
    # a 120 x 100 slice is drawn at scale 512 / 120, twice side by side
    assert panel.shape[0] == 512
    assert panel.shape[1] == 2 * int(100 * 512 / 120)
    left, right = np.split(panel[:, : panel.shape[1] // 2 * 2], 2, axis=1)
    # both halves carry coloured drawings over the grey slice
    for half in (left, right):
        assert (half.max(axis=2).astype(int) - half.min(axis=2) > 40).any()
    # the 0.1-score detection (bottom right) is not drawn at the default threshold 0.5
    low = left[int(75 * 512 / 120) : int(85 * 512 / 120), int(75 * 512 / 120) : int(85 * 512 / 120)]
    assert (low.max(axis=2) - low.min(axis=2) < 10).all()
    with pytest.raises(FileExistsError, match="slice_panel.png"):
        save_prediction_panels(fake_predictor, [record], NAME, str(out))


def test_metadata_is_fresh_and_class_names_are_registered():
    from ct_lesion_d2.data.datasets import image_class_names, lesion_metadata
    from ct_lesion_d2.model_zoo import get_config

    one = lesion_metadata(get_config("mask_rcnn_R18_T1", ["DATASETS.TEST", "()"]))
    two = lesion_metadata(
        get_config("mask_rcnn_R18_T1", ["DATASETS.TEST", "()", "MODEL.ROI_HEADS.NUM_CLASSES", "2"])
    )
    assert one.thing_classes == ["Lesion"] and two.thing_classes == ["GGO", "Consolidation"]
    assert "thing_classes" not in MetadataCatalog.get("ct_lesion_predict").as_dict()
    # the two-class UCSD classifier reports the names its datasets are registered with
    ucsd = get_config("classifier_R18_T1_ucsd_cpu.yaml")
    assert image_class_names(ucsd) == list(MetadataCatalog.get("ct_ucsd_val").thing_classes)
    assert image_class_names(ucsd) == ["non-COVID", "COVID"]
    paper = get_config("classifier_R18_T1", ["DATASETS.TEST", "()"])
    assert image_class_names(paper) == ["Control", "Common Pneumonia", "COVID-19"]


# --- the report's lesion picture (ct_lesion_d2.visualization.lesion_overlay) ---

RADIOLOGICAL = {"left": "R", "right": "L", "top": "A", "bottom": "P"}


def centre(labels, lesion_id):
    ys, xs = np.nonzero(labels == lesion_id)
    return int(np.median(ys)), int(np.median(xs))


def test_lesions_are_semi_transparent_in_one_colour_scale():
    from ct_lesion_d2.visualization import draw_lesion_overlay, lesion_colour

    grey = np.full((200, 249), 40, dtype=np.uint8)
    grey[:, 125:] = 200
    labels = np.zeros(grey.shape, dtype=np.int32)
    labels[30:70, 20:230] = 1  # over both grey levels
    labels[100:140, 20:70] = 2
    labels[100:140, 80:120] = 3
    scores = {1: 0.9, 2: 0.7, 3: 0.7}
    drawn = draw_lesion_overlay(grey, labels, scores, 0.5, scale=1.0).astype(int)
    assert drawn.shape == (200, 249, 3)
    dark, bright = drawn[50, 60], drawn[50, 190]
    # the slice shows through: the same lesion differs where the slice under it differs ...
    assert np.abs(dark - bright).max() > 50
    # ... and each pixel is the slice blended with the lesion's colour, not the colour alone
    colour = np.array(lesion_colour(0.9, 0.5)) * 255
    for pixel, value in ((dark, 40), (bright, 200)):
        assert np.allclose(pixel, 0.55 * value + 0.45 * colour, atol=3)
    # one colour scale: equal scores give equal colours, another score another colour
    assert np.abs(drawn[centre(labels, 2)] - drawn[centre(labels, 3)]).max() <= 1
    assert np.abs(drawn[centre(labels, 2)] - dark).max() > 20
    # lesions below the threshold are not in the scale: they take its bottom colour
    assert lesion_colour(0.2, 0.5) == lesion_colour(0.5, 0.5) != lesion_colour(1.0, 0.5)


def test_orientation_letters_follow_the_direction_cosines():
    from ct_lesion_d2.visualization import orientation_letters

    # RAS+ directions: the radiological axial view has columns to the patient's left (-x)
    # and rows to posterior (-y)
    assert orientation_letters([-1, 0, 0], [0, -1, 0]) == RADIOLOGICAL
    # a left-right flipped array puts the patient's left on the image's left
    assert orientation_letters([1, 0, 0], [0, -1, 0]) == {
        "left": "L", "right": "R", "top": "A", "bottom": "P",
    }  # fmt: skip
    assert orientation_letters([-1, 0, 0], [0, 1, 0])["top"] == "P"
    # coronal: superior at the top; lengths (the spacing) do not matter
    assert orientation_letters([-0.7, 0, 0], [0, 0, -2.5]) == {
        "left": "R", "right": "L", "top": "S", "bottom": "I",
    }  # fmt: skip
    # oblique by 45 degrees: both directions named, the larger first
    oblique = orientation_letters([-0.8, 0.6, 0], [0.6, 0.8, 0])
    assert oblique["right"] == "LA" and oblique["left"] == "RP" and oblique["bottom"] == "AR"


def _write_slice(shared_data, path, orientation):
    import pydicom

    ds = pydicom.dcmread(os.path.join(shared_data, "dicom/lidc_minimal_header/0.dcm"))
    ds.ImageOrientationPatient = orientation
    ds.save_as(path)
    return str(path)


def test_markers_of_real_dicom_slices_stored_flipped_or_coronal(shared_data, tmp_path):
    from ct_lesion_d2.data.readers import read_scan
    from ct_lesion_d2.data.readers.geometry import scan_geometry
    from ct_lesion_d2.visualization import slice_view

    def view(orientation):
        scan = read_scan(_write_slice(shared_data, tmp_path / "s.dcm", orientation))
        return scan, slice_view(scan_geometry(scan), scan.spacing_mm)

    standard, standard_view = view([1, 0, 0, 0, 1, 0])
    assert standard_view.sides == RADIOLOGICAL and standard_view.spacing_mm == (0.625, 0.625)
    # stored with rows and columns reversed: the reader turns it back, the letters stay right
    flipped, flipped_view = view([-1, 0, 0, 0, -1, 0])
    assert np.array_equal(flipped.pixels[0], standard.pixels[0][::-1, ::-1])
    assert flipped_view.sides == RADIOLOGICAL
    # coronal slices are kept as stored: the letters say superior at the top
    with pytest.warns(UserWarning, match="not axis-aligned axial"):
        _, coronal_view = view([1, 0, 0, 0, 0, -1])
    assert coronal_view.sides == {"left": "R", "right": "L", "top": "S", "bottom": "I"}


def test_markers_only_where_the_geometry_is_known(tmp_path):
    from ct_lesion_d2.data.readers import read_scan
    from ct_lesion_d2.data.readers.geometry import scan_geometry
    from ct_lesion_d2.visualization import SliceView, draw_lesion_overlay, slice_view

    path = tmp_path / "slice.png"
    Image.fromarray(np.full((200, 249), 60, dtype=np.uint8)).save(path)
    scan = read_scan(str(path))
    png_view = slice_view(scan_geometry(scan), scan.spacing_mm)
    assert png_view.sides is None and png_view.spacing_mm is None
    assert png_view.note.startswith("geometry unknown")
    grey, labels = scan.pixels[0].astype(np.uint8), np.zeros((200, 249), dtype=np.int32)
    known_view = SliceView(RADIOLOGICAL, (0.7, 0.7))
    known = draw_lesion_overlay(grey, labels, {}, 0.5, known_view, scale=1.0)
    unknown = draw_lesion_overlay(grey, labels, {}, 0.5, png_view, scale=1.0)
    # the letters' dark boxes at the middle of the left and right sides and of the top
    for patch in (np.s_[80:120, :25], np.s_[80:120, -25:], np.s_[:25, 105:145]):
        assert (known[patch] < 30).any() and not (unknown[patch] < 30).any()
    # the unknown geometry is said in the picture (a text box at the bottom left)
    assert (unknown[150:, :100] < 30).any() and not (known[150:, :100] < 30).any()


@pytest.mark.parametrize("spacing, scale", [(0.8, 1.0), (0.4, 1.0), (0.8, 2.0)])
def test_scale_bar_is_n_mm_over_the_pixel_spacing(spacing, scale):
    from ct_lesion_d2.visualization import (
        SliceView,
        draw_lesion_overlay,
        scale_bar_length_mm,
        scale_bar_pixels,
    )

    grey = np.zeros((200, 401), dtype=np.uint8)
    view = SliceView(RADIOLOGICAL, (1.5, spacing))
    drawn = draw_lesion_overlay(grey, np.zeros(grey.shape, int), {}, 0.5, view, scale=scale)
    length_mm = scale_bar_length_mm(401, spacing)
    # a quarter of the width at most: 320.8 mm wide -> 5 cm, 160.4 mm -> 2 cm
    assert length_mm == {0.8: 50, 0.4: 20}[spacing]
    assert scale_bar_pixels(length_mm, spacing) == length_mm / spacing
    white = (drawn >= 250).all(axis=2)
    runs = []
    for row in white[int(150 * scale) :]:
        padded = np.concatenate([[0], row.astype(int), [0]])
        edges = np.flatnonzero(np.diff(padded))
        runs += list(edges[1::2] - edges[::2])
    assert max(runs) == pytest.approx(length_mm / spacing * scale, abs=2)


def fake_slice_prediction(size=(200, 249)):
    from ct_lesion_d2.engine import SlicePrediction

    h, w = size
    inst = Instances(size)
    inst.pred_boxes = Boxes(torch.tensor([[20.0, 30.0, 120.0, 90.0], [150.0, 100.0, 230.0, 180.0]]))
    inst.scores = torch.tensor([0.95, 0.6])
    inst.pred_classes = torch.tensor([0, 0])
    masks = torch.zeros(2, h, w, dtype=torch.bool)
    masks[0, 40:80, 30:110] = True
    masks[1, 110:170, 160:220] = True
    inst.pred_masks = masks
    inst.pred_mask_logits = torch.linspace(-12, 12, 28 * 28).reshape(1, 28, 28).repeat(2, 1, 1)
    return SlicePrediction(inst, inst.pred_boxes.tensor, inst.scores, 2, "segmenter")


def test_mask_probability_in_unit_range_at_the_size_of_the_prediction():
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from ct_lesion_d2.visualization import analysis_figure, mask_probability_map

    prediction = fake_slice_prediction()
    inst = prediction.instances
    probability = mask_probability_map(inst.pred_mask_logits, inst.pred_boxes.tensor, (200, 249))
    assert probability.shape == inst.pred_masks.shape[1:]
    inside = np.isfinite(probability)
    assert inside[50, 50] and not inside[5, 5]  # blank outside every box
    assert probability[inside].min() >= 0.0 and probability[inside].max() <= 1.0
    assert probability[inside].min() < 0.01 and probability[inside].max() > 0.99
    grey = np.full((200, 249), 90, dtype=np.uint8)
    fig = analysis_figure(grey, prediction, None, score_threshold=0.5)
    lesions_ax, probability_ax = fig.axes[:2]
    FigureCanvasAgg(fig).draw()
    a, b = lesions_ax.get_window_extent(), probability_ax.get_window_extent()
    shown = [ax.images[0].get_window_extent() for ax in (lesions_ax, probability_ax)]
    assert shown[0].width == pytest.approx(shown[1].width, abs=1)
    assert shown[0].height == pytest.approx(shown[1].height, abs=1)
    assert a.width == pytest.approx(b.width, abs=1) and a.height == pytest.approx(b.height, abs=1)
    assert probability_ax.images[-1].get_clim() == (0.0, 1.0)
    labels = [bar.get_ylabel() for ax in fig.axes for bar in ax.child_axes]
    assert "mask probability (sigmoid)" in labels
    assert "lesion score (highest instance confidence)" in labels
    # the prediction is titled by lesions (connected regions), not by stacked confidences
    assert lesions_ax.get_title() == "prediction: 2 lesions (2 detected instances)"


def test_nifti_markers_need_an_orientation_in_the_header(tmp_path):
    import nibabel as nib

    from ct_lesion_d2.data.readers import read_scan
    from ct_lesion_d2.data.readers.geometry import scan_geometry
    from ct_lesion_d2.visualization import slice_view

    data = np.full((24, 20, 1), -700, dtype=np.int16)
    # stored from left to right (+x is the patient's right in RAS): the reader turns it
    stated = nib.Nifti1Image(data, np.diag([0.7, 0.8, 2.0, 1.0]))
    nib.save(stated, tmp_path / "stated.nii.gz")
    scan = read_scan(str(tmp_path / "stated.nii.gz"))
    view = slice_view(scan_geometry(scan), scan.spacing_mm)
    assert (
        view.sides == RADIOLOGICAL
        and view.spacing_mm == pytest.approx((0.8, 0.7))
        and view.note == ""
    )
    # no qform, no sform: nibabel's affine is a guess, so no letters (the scale stays)
    stated.set_qform(None, code=0)
    stated.set_sform(None, code=0)
    nib.save(stated, tmp_path / "unstated.nii.gz")
    scan = read_scan(str(tmp_path / "unstated.nii.gz"))
    view = slice_view(scan_geometry(scan), scan.spacing_mm)
    assert view.sides is None and view.spacing_mm == pytest.approx((0.8, 0.7))
    assert view.note == "orientation unknown"
