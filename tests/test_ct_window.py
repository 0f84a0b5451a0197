"""HU windowing: the lung window maps HU onto the 8-bit scale of the PNG datasets, and training
mappers and the predictor turn a DICOM slice into exactly what its PNG export would give."""

import glob
import os

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetMapper
from detectron2.structures import BoxMode
from PIL import Image

from ct_lesion_d2 import add_ct_lesion_config
from ct_lesion_d2.data import ClassificationDatasetMapper, CTLesionDatasetMapper
from ct_lesion_d2.data.io import DatasetFormatError
from ct_lesion_d2.data.readers import read_scan
from ct_lesion_d2.data.transforms import (
    CTWindowTransform,
    apply_ct_window,
    read_model_slice,
    to_model_intensities,
    window_from_config,
)
from ct_lesion_d2.model_zoo import get_config

SAMPLE = "dicom/tcia_covid19_ny_sbu/A002304/axial/19010112-135.dcm"


def small_cfg(*opts):
    cfg = get_cfg()
    add_ct_lesion_config(cfg)
    cfg.merge_from_list(["INPUT.MIN_SIZE_TEST", "128", "INPUT.MAX_SIZE_TEST", "200", *opts])
    return cfg


def test_lung_window_values():
    hu = np.array([-3024, -1350, -1024, -600, 0, 150, 2000], dtype=np.float32)
    assert apply_ct_window(hu).tolist() == [0, 0, 55, 128, 230, 255, 255]
    assert apply_ct_window(hu, dtype=np.float32)[3] == pytest.approx(127.5)
    assert apply_ct_window(hu, level=40, width=400).tolist() == [0, 0, 0, 0, 102, 198, 255]
    assert CTWindowTransform(-600, 1500).apply_image(hu).tolist() == apply_ct_window(hu).tolist()
    with pytest.raises(ValueError, match="width must be positive"):
        apply_ct_window(hu, width=0)


def test_config_states_what_the_model_expects():
    cfg = get_config("mask_rcnn_R18_T1")
    assert cfg.INPUT.CT_INPUT_UNITS == "uint8_windowed"
    assert window_from_config(cfg) == (-600.0, 1500.0, "uint8_windowed")
    cfg.merge_from_list(["INPUT.CT_INPUT_UNITS", "Hounsfield"])
    with pytest.raises(ValueError, match="CT_INPUT_UNITS must be one of"):
        window_from_config(cfg)


def air_peak(images):
    """Median over slices of the most frequent grey level below 120 (air), padding excluded."""
    peaks = []
    for image in images:
        counts = np.bincount(image.ravel(), minlength=256)[:120]
        counts[0] = 0
        peaks.append(int(counts.argmax()))
    return float(np.median(peaks))


def test_lung_window_matches_the_png_datasets(shared_data):
    pngs = [
        np.asarray(Image.open(p))
        for p in sorted(glob.glob(os.path.join(shared_data, "medseg100", "images", "*.png")))
    ]
    dicoms = [
        read_scan(p).pixels[0]
        for p in sorted(
            glob.glob(os.path.join(shared_data, "dicom", "**", "*.dcm"), recursive=True)
        )
    ]
    png_air = air_peak(pngs)
    assert abs(air_peak([apply_ct_window(hu) for hu in dicoms]) - png_air) <= 10
    # the check can fail: a level 200 HU higher moves air about 34 grey levels down
    assert abs(air_peak([apply_ct_window(hu, -400, 1500) for hu in dicoms]) - png_air) > 20


@pytest.fixture
def dicom_and_png(shared_data, tmp_path):
    """The real DICOM sample and its lung-window PNG export."""
    dicom = os.path.join(shared_data, SAMPLE)
    png = str(tmp_path / "export.png")
    Image.fromarray(apply_ct_window(read_scan(dicom).pixels[0])).save(png)
    return dicom, png


def test_dicom_reaches_models_as_its_png_export(dicom_and_png):
    dicom, png = dicom_and_png
    cfg = small_cfg()
    from_dicom, from_png = read_model_slice(dicom, cfg), read_model_slice(png, cfg)
    assert from_dicom.dtype == np.uint8 and np.array_equal(from_dicom, from_png)

    # segmentation mapper: DICOM record == PNG record, and PNG records are Detectron2's own
    record = {"height": 512, "width": 512, "image_id": 0, "annotations": []}
    ours = CTLesionDatasetMapper(cfg, False)
    d2 = DatasetMapper(cfg, False)
    dicom_input = ours({**record, "file_name": dicom})["image"]
    png_input = ours({**record, "file_name": png})["image"]
    assert dicom_input.shape == (3, 128, 128)
    assert torch.equal(dicom_input, png_input)
    assert torch.equal(png_input, d2({**record, "file_name": png})["image"])

    # training: annotations follow the image the same way
    cfg_train = small_cfg("INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.RANDOM_FLIP", "none")
    annotation = {
        "bbox": [100.0, 150.0, 60.0, 40.0],
        "bbox_mode": BoxMode.XYWH_ABS,
        "category_id": 0,
        "segmentation": [[100.0, 150.0, 160.0, 150.0, 160.0, 190.0, 100.0, 190.0]],
    }
    train = CTLesionDatasetMapper(cfg_train, True)
    a = train({**record, "file_name": dicom, "annotations": [annotation]})
    b = train({**record, "file_name": png, "annotations": [annotation]})
    assert torch.equal(a["image"], b["image"]) and a["image"].shape == (3, 128, 128)
    assert torch.equal(a["instances"].gt_boxes.tensor, b["instances"].gt_boxes.tensor)
    assert a["instances"].gt_boxes.tensor.tolist() == [[25.0, 37.5, 40.0, 47.5]]

    # classification mapper
    mapper = ClassificationDatasetMapper(cfg, False)
    assert torch.equal(mapper({"file_name": dicom})["image"], mapper({"file_name": png})["image"])


def test_hu_models(dicom_and_png):
    dicom, png = dicom_and_png
    cfg = small_cfg("INPUT.CT_INPUT_UNITS", "HU")
    hu = read_model_slice(dicom, cfg)
    assert hu.dtype == np.float32 and np.array_equal(hu, read_scan(dicom).pixels[0])
    with pytest.raises(DatasetFormatError, match="export.png: the model expects Hounsfield units"):
        read_model_slice(png, cfg)
    grey = np.array([[0.0, 254.6]])
    assert to_model_intensities(grey, False).tolist() == [[0, 255]]
