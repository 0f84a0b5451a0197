"""Only axial slices reach an axial model: coronal and sagittal DICOM series and NIfTI volumes
are resampled to axial slices (spacing from the volume, voxel values checked against a hand
computation), their masks are exported on the input's grid (NIfTI) or per source slice (DICOM
SEG), and ``tools/predict.py`` refuses a single non-axial slice or oblique slices in one line
unless ``--accept-non-axial``.

The DICOM files are tiny series written with pydicom (``write_dicom`` of the bad-input suite);
stored value ``hu(k, i, j)`` marks slice k, row i, column j.
"""

import json
import os
import subprocess
import sys

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from test_bad_scan_inputs import listing, run_predict, segmenter, write_dicom  # noqa: F401

from ct_lesion_d2.analysis.mask_export import export_lesion_masks
from ct_lesion_d2.data.readers import read_scan
from ct_lesion_d2.data.readers.geometry import non_axial_input, scan_geometry

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORONAL = [1, 0, 0, 0, 0, -1]  # columns to the patient's left, rows downwards (LPS)
SAGITTAL = [0, 1, 0, 0, 0, -1]  # columns to posterior, rows downwards; normal to the right
OBLIQUE = [1, 0, 0, 0, 0.8, -0.6]
# the patient module highdicom needs to write a SEG
PATIENT = dict(
    PatientID="P1",
    PatientName="Test^Patient",
    PatientBirthDate="",
    PatientSex="O",
    StudyInstanceUID="1.2.826.0.1.3680043.8.498.1",
    StudyID="1",
    StudyDate="20200101",
    StudyTime="120000",
    ReferringPhysicianName="",
    AccessionNumber="",
    FrameOfReferenceUID="1.2.826.0.1.3680043.8.498.2",
    SeriesNumber=1,
    InstanceNumber=1,
)


def hu(k, i, j):
    return 100 * k + 10 * i + j


def write_series(folder, orientation, position, slices, rows=6, cols=5, spacing=(0.5, 0.7)):
    """``slices`` files, file k at ``position(k)`` (LPS mm), pixels ``hu(k, i, j)``."""
    uid = pydicom.uid.generate_uid()
    i, j = np.mgrid[:rows, :cols]
    for k in range(slices):
        write_dicom(
            os.path.join(folder, f"s{k}.dcm"),
            series_uid=uid,
            Rows=rows,
            Columns=cols,
            PixelSpacing=list(spacing),
            ImageOrientationPatient=orientation,
            ImagePositionPatient=list(position(k)),
            PixelData=(hu(k, i, j) + 1024).astype(np.int16).tobytes(),
            **PATIENT,
        )
    return str(folder)


def test_coronal_series_becomes_axial_slices(tmp_path):
    folder = write_series(tmp_path / "cor", CORONAL, lambda k: (0.0, 3.0 * k, 0.0), 4)
    scan = read_scan(folder)
    assert scan.orientation == "axial" and scan.resampled_from == "coronal"
    assert scan.stored_orientation == "coronal" and non_axial_input(scan) is None
    # axial slice s = stored row 5 - s (inferior first), row r = slice r (anterior first),
    # column c = stored column c (patient's right first)
    assert scan.pixels.shape == (6, 4, 5)
    s, r, c = np.mgrid[:6, :4, :5]
    np.testing.assert_array_equal(scan.pixels, hu(r, 5 - s, c))
    assert scan.spacing_mm == pytest.approx((3.0, 0.7)) and scan.slice_thickness_mm == 0.5
    assert scan.positions_mm == pytest.approx([-2.5, -2.0, -1.5, -1.0, -0.5, 0.0])
    assert scan.source_slices == [f"s{k}.dcm" for k in range(4)]
    assert "coronal series of 4 slices resampled to 6 axial slices" in scan.notes[0]
    geometry = scan_geometry(scan)
    # stored pixel (row 2, column 3) of slice 1 lies at LPS (3 * 0.7, 3.0, -2 * 0.5)
    assert np.allclose(geometry.affine @ [3, 1, 5 - 2, 1], [-2.1, -3.0, -1.0, 1])


def test_sagittal_series_becomes_axial_slices(tmp_path):
    folder = write_series(tmp_path / "sag", SAGITTAL, lambda k: (-2.0 * k, 0.0, 0.0), 3)
    scan = read_scan(folder)
    assert scan.resampled_from == "sagittal" and scan.orientation == "axial"
    # the normal runs to the patient's right: slice k = 2 is the rightmost, column 0
    assert scan.pixels.shape == (6, 5, 3)
    s, r, c = np.mgrid[:6, :5, :3]
    np.testing.assert_array_equal(scan.pixels, hu(2 - c, 5 - s, r))
    assert scan.spacing_mm == pytest.approx((0.7, 2.0)) and scan.slice_thickness_mm == 0.5


def test_axial_series_is_not_resampled(tmp_path):
    folder = write_series(tmp_path / "ax", [1, 0, 0, 0, 1, 0], lambda k: (0.0, 0.0, 2.0 * k), 3)
    scan = read_scan(folder)
    assert scan.stored_orientation == "axial" and scan.resampled_from is None
    assert scan.slice_names == ["s0.dcm", "s1.dcm", "s2.dcm"] and scan.notes == []


@pytest.mark.parametrize(
    "orientation,position,slices,expected",
    [
        (CORONAL, lambda k: (0.0, 0.0, 0.0), 1, "a single coronal slice"),
        (SAGITTAL, lambda k: (0.0, 0.0, 0.0), 1, "a single sagittal slice"),
        (
            OBLIQUE,
            lambda k: (0.0, 0.6 * k, 0.8 * k),
            3,
            "an oblique series (direction cosines not along the patient axes)",
        ),
        (
            CORONAL,
            lambda k: (0.0, [0.0, 1.0, 3.0][k], 0.0),
            3,
            "a coronal series whose slices do not form an evenly spaced volume",
        ),
    ],
)
def test_non_axial_input_kept_as_stored_and_named(
    tmp_path, orientation, position, slices, expected
):
    folder = write_series(tmp_path / "x", orientation, position, slices)
    with pytest.warns(UserWarning, match="kept as stored"):
        scan = read_scan(folder if slices > 1 else os.path.join(folder, "s0.dcm"))
    assert scan.orientation == "as stored" and scan.resampled_from is None
    assert non_axial_input(scan) == expected
    assert scan.pixels.shape == (slices, 6, 5)


def coronal_nifti(path):
    """(5, 6, 4) voxels: i along +R (0.7 mm), j downwards
    (0.5 mm), k along +A (3 mm); value 100 * k + 10 * j + i."""
    i, j, k = np.mgrid[:5, :6, :4]
    affine = np.array(
        [[0.7, 0, 0, -10.0], [0, 0, 3.0, 20.0], [0, -0.5, 0, 30.0], [0, 0, 0, 1]], dtype=float
    )
    data = (100 * k + 10 * j + i - 900).astype(np.int16)
    nib.save(nib.Nifti1Image(data, affine), path)
    return data, affine


def test_coronal_nifti_resampled_and_label_map_on_the_input_grid(tmp_path):
    data, affine = coronal_nifti(str(tmp_path / "cor.nii.gz"))
    scan = read_scan(str(tmp_path / "cor.nii.gz"))
    assert scan.resampled_from == "coronal" and scan.orientation == "axial"
    # slice s: j = 5 - s (inferior first); row r: k = 3 - r (anterior first); column c:
    # i = 4 - c (patient's right first)
    assert scan.pixels.shape == (6, 4, 5)
    s, r, c = np.mgrid[:6, :4, :5]
    np.testing.assert_array_equal(scan.pixels, data[4 - c, 5 - s, 3 - r])
    assert scan.spacing_mm == pytest.approx((3.0, 0.7)) and scan.slice_thickness_mm == 0.5
    assert scan.positions_mm == pytest.approx([27.5, 28.0, 28.5, 29.0, 29.5, 30.0])
    labels = np.zeros(scan.pixels.shape, np.uint16)
    labels[1, 2, 3] = 7  # = voxel (i, j, k) = (1, 4, 1)
    outputs = export_lesion_masks(scan, labels, str(tmp_path), software_version="t")
    assert outputs["label_map"]["geometry"] == "the input NIfTI's affine"
    mask = nib.load(str(tmp_path / "lesions.nii.gz"))
    assert mask.shape == data.shape and np.allclose(mask.affine, affine)
    assert np.argwhere(np.asarray(mask.dataobj)).tolist() == [[1, 4, 1]]
    assert np.allclose(scan_geometry(scan).affine @ [3, 2, 1, 1], affine @ [1, 4, 1, 1])


def test_oblique_and_single_slice_nifti_kept_as_stored(tmp_path):
    data = np.full((5, 6, 4), -500, np.int16)
    turn = np.deg2rad(30)
    affine = np.eye(4)
    affine[1:3, 1:3] = [[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]]
    nib.save(nib.Nifti1Image(data, affine), str(tmp_path / "o.nii"))
    with pytest.warns(UserWarning, match=r"o.nii: an oblique volume .*; kept as stored"):
        scan = read_scan(str(tmp_path / "o.nii"))
    assert scan.orientation == "as stored" and scan.pixels.shape == (4, 6, 5)
    coronal = np.array([[1.0, 0, 0, 0], [0, 0, 1.0, 0], [0, -1.0, 0, 0], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(data[:, :, :1], coronal), str(tmp_path / "one.nii"))
    with pytest.warns(UserWarning, match="kept as stored"):
        scan = read_scan(str(tmp_path / "one.nii"))
    assert non_axial_input(scan) == "a single coronal slice"
    labels = np.ones(scan.pixels.shape, np.uint16)
    export_lesion_masks(scan, labels, str(tmp_path), software_version="t")
    mask = nib.load(str(tmp_path / "lesions.nii.gz"))
    assert mask.shape == (5, 6, 1) and np.allclose(mask.affine, coronal)


def test_dicom_seg_of_a_resampled_series_follows_each_source_slice(tmp_path):
    folder = write_series(tmp_path / "cor", CORONAL, lambda k: (0.0, 3.0 * k, 0.0), 4)
    scan = read_scan(folder)
    labels = np.zeros(scan.pixels.shape, np.uint16)
    labels[5 - 2, 1, 3] = 1  # stored slice 1, row 2, column 3
    labels[5 - 0, 3, 0] = 2  # stored slice 3, row 0, column 0
    outputs = export_lesion_masks(scan, labels, str(tmp_path), software_version="t")
    assert outputs["dicom_seg"]["referenced_instances"] == 4
    seg = hd.seg.segread(str(tmp_path / "lesions_seg.dcm"))
    frames = seg.pixel_array.reshape(-1, 6, 5)
    by_uid = {
        f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID: n
        for n, f in enumerate(seg.PerFrameFunctionalGroupsSequence)
    }
    for k in range(4):
        ds = pydicom.dcmread(os.path.join(folder, f"s{k}.dcm"))
        expected = np.zeros((6, 5), bool)
        if k == 1:
            expected[2, 3] = True
        if k == 3:
            expected[0, 0] = True
        assert np.array_equal(frames[by_uid[ds.SOPInstanceUID]] > 0, expected)


def test_predict_resamples_a_coronal_series_and_says_so(tmp_path, segmenter):  # noqa: F811
    folder = write_series(
        tmp_path / "cor", CORONAL, lambda k: (0.0, 0.7 * k, 0.0), 40, rows=32, cols=48
    )
    (report_path,) = run_predict(segmenter, [folder], tmp_path / "out")
    report = json.load(open(report_path))
    scan = report["scan"]
    assert scan["resampled_from"] == "coronal" and scan["orientation"] == "axial"
    assert scan["not_axial"] is None and (scan["num_slices"], scan["height"]) == (32, 40)
    assert scan["spacing_mm"] == pytest.approx([0.7, 0.7]) and scan["slice_thickness_mm"] == 0.5
    assert report["outputs"]["dicom_seg"]["referenced_instances"] == 40
    page = open(os.path.join(os.path.dirname(report_path), "report.html")).read()
    top = page.index("<h1>")
    assert page.index("Resampled to axial slices from a coronal input") - top < 300


def test_predict_refuses_a_single_coronal_slice_unless_asked(tmp_path, segmenter):  # noqa: F811
    folder = write_series(tmp_path / "in", CORONAL, lambda k: (0.0, 0.0, 0.0), 1, 48, 40)
    path = os.path.join(folder, "s0.dcm")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as excinfo:
        run_predict(segmenter, [path], out)
    assert str(excinfo.value) == (
        f"error: {path}: a single coronal slice; the model is trained on axial slices — "
        "pass --accept-non-axial to run it anyway"
    )
    assert listing(out) == []
    (report_path,) = run_predict(segmenter, [path], out, "--accept-non-axial")
    report = json.load(open(report_path))
    assert report["scan"]["not_axial"] == "a single coronal slice"
    assert report["settings"]["accept_non_axial"] is True
    page = open(os.path.join(os.path.dirname(report_path), "report.html")).read()
    assert page.index("Not axial: the input is a single coronal slice") < page.index("<table")


def test_predict_refuses_an_oblique_series_in_one_line(tmp_path, segmenter):  # noqa: F811
    folder = write_series(tmp_path / "obl", OBLIQUE, lambda k: (0.0, 0.6 * k, 0.8 * k), 3)
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "predict.py"), "--config-file",
         segmenter[0], "--weights", segmenter[1], "--input", folder, "--output", str(out)],
        capture_output=True, text=True, cwd=str(tmp_path),
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {folder}: an oblique series (direction cosines not along the patient axes); "
        "the model is trained on axial slices — pass --accept-non-axial to run it anyway"
    )
    assert "kept as stored" not in result.stderr and listing(out) == []
