"""The bad-input suite, DICOM and NIfTI part: each case through the scan reader
(``read_scan``), the training mapper (``CTLesionDatasetMapper``) and ``tools/predict.py``
gives a correct result or a clear error naming the file and the problem, and predict.py writes
no partial output (nor replaces a report without ``--overwrite``, nor leaves a half-written one
when interrupted).

The DICOM files are built here with pydicom (64x64 CT slices in int16 with a rescale to HU), so
the suite needs no sample data.
"""

import contextlib
import json
import os

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from detectron2.modeling import build_model
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid

from ct_lesion_d2.analysis import predict
from ct_lesion_d2.data.io import DatasetFormatError
from ct_lesion_d2.data.mappers import CTLesionDatasetMapper
from ct_lesion_d2.data.readers import PADDING_HU, read_scan
from ct_lesion_d2.model_zoo import get_config

SIZE = 64
SMALL = [
    "MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "64",
    "MODEL.RPN.PRE_NMS_TOPK_TEST", "100", "MODEL.RPN.POST_NMS_TOPK_TEST", "20",
    "TEST.DETECTIONS_PER_IMAGE", "4", "DATASETS.TEST", "()",
]  # fmt: skip


def stored_slice():
    """int16 stored values: -1000 HU air around a 0 HU disc once the rescale is applied."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    hu = np.where((yy - 32) ** 2 + (xx - 32) ** 2 < 20**2, 0, -1000)
    return (hu + 1024).astype(np.int16)


def write_dicom(path, series_uid=None, z=0.0, pixels=True, **changes):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.Rows = ds.Columns = SIZE
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.PixelSpacing = [0.7, 0.7]
    ds.SliceThickness = 2.5
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [0.0, 0.0, z]
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    if pixels:
        ds.PixelData = stored_slice().tobytes()
    for key, value in changes.items():
        if value is None:
            delattr(ds, key)
        else:
            setattr(ds, key, value)
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    ds.save_as(str(path), enforce_file_format=True)
    return str(path)


def no_pixel_data(tmp_path):
    return write_dicom(tmp_path / "in" / "no_pixels.dcm", pixels=False)


def missing_rescale_slope(tmp_path):
    return write_dicom(tmp_path / "in" / "no_slope.dcm", RescaleSlope=None)


def unavailable_codec(tmp_path):
    path = write_dicom(tmp_path / "in" / "j2k.dcm")
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(64)])  # a codestream start
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path


def nifti_with_nan(tmp_path):
    data = np.full((SIZE, SIZE, 2), -800.0, dtype=np.float32)
    data[3, 4, 0] = np.nan
    path = str(tmp_path / "in" / "nan.nii.gz")
    os.makedirs(os.path.dirname(path))
    nib.save(nib.Nifti1Image(data, np.diag([0.7, 0.7, 2.5, 1.0])), path)
    return path


def two_series(tmp_path):
    folder = tmp_path / "in" / "patient"
    for k, uid in enumerate(("1.2.826.0.1.1", "1.2.826.0.1.2")):
        write_dicom(folder / f"im{k}.dcm", series_uid=uid, z=2.5 * k)
    return str(folder)


# case -> (input maker, expected problem (None: a correct result)); errors name the input
CASES = {
    "dicom_without_pixel_data": (no_pixel_data, "no pixel data"),
    "dicom_missing_rescale_slope": (missing_rescale_slope, None),
    "dicom_unavailable_codec": (unavailable_codec, "cannot decode compressed pixel data"),
    "nifti_with_nan_voxels": (nifti_with_nan, None),
    "folder_with_two_dicom_series": (two_series, "mixes 2 DICOM series"),
}


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory):
    """A random-weight segmenter saved as (config, weights), small enough for the CPU."""
    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    cfg = get_config("mask_rcnn_R18_T2", SMALL)
    weights, config = str(folder / "seg.pth"), str(folder / "seg.yaml")
    torch.save({"model": build_model(cfg).state_dict()}, weights)
    with open(config, "w") as f:
        f.write(cfg.dump())
    return config, weights


def run_predict(segmenter, inputs, output, *extra):
    argv = [
        "--config-file",
        segmenter[0],
        "--weights",
        segmenter[1],
        "--input",
        *inputs,
        "--output",
        str(output),
        "--no-progress",
        "--max-panels",
        "1",
        *extra,
    ]
    return predict.main(argv)


def listing(folder):
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_scan(case, tmp_path, segmenter):
    make, problem = CASES[case]
    path = make(tmp_path)
    out = tmp_path / "out"
    if problem is not None:
        with pytest.raises(DatasetFormatError) as excinfo:
            read_scan(path)
        assert path in str(excinfo.value) and problem in str(excinfo.value)
        if case == "dicom_unavailable_codec":  # says which decoder to install
            assert "JPEG 2000" in str(excinfo.value) and "openjpeg" in str(excinfo.value)
        with pytest.raises(SystemExit) as excinfo:
            run_predict(segmenter, [path], out)
        message = str(excinfo.value)
        assert message.startswith("error: ") and path in message and problem in message
        assert listing(out) == []  # no folder, no staged leftovers
        if os.path.isfile(path):  # a dataset record of this file, as training reads it
            cfg = get_config("mask_rcnn_R18_T2", SMALL)
            record = {"file_name": path, "height": SIZE, "width": SIZE, "image_id": 0}
            with pytest.raises(DatasetFormatError) as excinfo:
                CTLesionDatasetMapper(cfg, False)(record)
            assert path in str(excinfo.value)
        return
    with pytest.warns(UserWarning) if case == "nifti_with_nan_voxels" else contextlib.nullcontext():
        scan = read_scan(path)
    if case == "dicom_missing_rescale_slope":
        # slope 1 (the DICOM default) with the intercept that is there: HU = stored - 1024
        np.testing.assert_array_equal(scan.pixels[0], stored_slice() - 1024.0)
    else:
        assert np.isfinite(scan.pixels).all() and scan.padding_mask.sum() == 1
        assert scan.pixels[scan.padding_mask][0] == PADDING_HU
        assert (scan.pixels[~scan.padding_mask] == -800.0).all()
    (report_path,) = run_predict(segmenter, [path], out)
    report = json.load(open(report_path))
    assert len(report["slices"]) == scan.num_slices and report["scan"]["input_units"] == "HU"
    assert listing(out) == [os.path.basename(os.path.dirname(report_path))]


def test_two_series_are_read_one_by_one_when_asked(tmp_path, segmenter):
    folder = two_series(tmp_path)
    paths = run_predict(segmenter, [folder], tmp_path / "out", "--all-series")
    assert [os.path.basename(os.path.dirname(p)) for p in paths] == [
        "patient_series1",
        "patient_series2",
    ]


def test_predict_never_replaces_a_report_without_overwrite(tmp_path, segmenter):
    path = missing_rescale_slope(tmp_path)
    out = tmp_path / "out"
    (report_path,) = run_predict(segmenter, [path], out)
    before = open(report_path, "rb").read()
    with pytest.raises(SystemExit, match="exist and are not empty; pass --overwrite"):
        run_predict(segmenter, [path], out)
    assert open(report_path, "rb").read() == before


def test_interrupted_predict_leaves_the_previous_report(tmp_path, segmenter, monkeypatch):
    path = missing_rescale_slope(tmp_path)
    out = tmp_path / "out"
    (report_path,) = run_predict(segmenter, [path], out)
    folder = os.path.dirname(report_path)
    before = {
        name: open(os.path.join(folder, name), "rb").read()
        for name in ("report.json", "report.html")
    }

    def interrupted(*args, **kwargs):  # Ctrl-C while the new figures are being written
        raise KeyboardInterrupt

    monkeypatch.setattr(predict, "save_slice_figures", interrupted)
    with pytest.raises(SystemExit) as e:  # predict.py turns Ctrl-C into exit status 130
        run_predict(segmenter, [path], out, "--overwrite")
    assert e.value.code == 130
    for name, data in before.items():
        assert open(os.path.join(folder, name), "rb").read() == data
    assert listing(out) == [os.path.basename(folder)]  # the staged folder is gone


def test_a_kill_inside_the_folder_swap_is_recovered(tmp_path, segmenter):
    """What SIGKILL leaves, made by hand: a staged folder that was never committed, and the old
    folder moved aside just before the staged one would have been renamed into place."""
    path = missing_rescale_slope(tmp_path)
    out = tmp_path / "out"
    (report_path,) = run_predict(segmenter, [path], out)
    folder = os.path.dirname(report_path)
    name = os.path.basename(folder)
    before = open(report_path, "rb").read()
    os.rename(folder, out / f".old-{name}.abc123")
    (out / f".tmp-{name}.def456" / "panels").mkdir(parents=True)
    # the next run puts the old report back, clears the leftovers, and refuses to overwrite it
    with pytest.raises(SystemExit, match="pass --overwrite"):
        run_predict(segmenter, [path], out)
    assert listing(out) == [name] and open(report_path, "rb").read() == before
