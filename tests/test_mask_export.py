"""Lesion masks read back: the NIfTI label map on the input's grid and the DICOM SEG's
references, codes and pixels, on a written NIfTI and on real TCIA slices."""

import os

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest

from ct_lesion_d2.analysis.mask_export import export_lesion_masks
from ct_lesion_d2.data.readers import read_scan
from ct_lesion_d2.data.readers.geometry import scan_geometry

TCIA = "dicom/tcia_covid19_ny_sbu/A002304/axial/19001231-076.dcm"
MARK = (slice(100, 110), slice(40, 60))  # stored rows, columns of a bright marker


def _marked_labels(scan):
    """Label 1 where the scan's pixels hold the marker (found in the reader's grid)."""
    labels = (scan.pixels > 2500).astype(np.uint16)
    assert labels.sum() > 0
    return labels


def test_nifti_label_map_keeps_the_input_grid_and_affine(tmp_path):
    # stored as many converters write it: voxel axes (y, x, z) flipped, not RAS
    data = np.full((40, 30, 5), -800, np.int16)
    data[5:9, 20:25, 3] = 3000
    affine = np.array(
        [[0.0, -0.7, 0.0, 10.0], [-0.8, 0.0, 0.0, 20.0], [0.0, 0.0, 2.5, -50.0], [0, 0, 0, 1]]
    )
    path = str(tmp_path / "chest.nii.gz")
    nib.save(nib.Nifti1Image(data, affine), path)
    scan = read_scan(path)
    outputs = export_lesion_masks(scan, _marked_labels(scan), str(tmp_path), software_version="t")
    assert outputs["label_map"]["geometry"] == "the input NIfTI's affine"
    assert outputs["dicom_seg"] == {"file": None, "note": "input is not DICOM"}
    mask = nib.load(str(tmp_path / "lesions.nii.gz"))
    assert mask.shape == data.shape and np.allclose(mask.affine, affine)
    assert mask.get_data_dtype() == np.uint16
    assert np.array_equal(np.asarray(mask.dataobj) > 0, data == 3000)
    # the reader's grid affine maps the marker to the same place as the input's affine
    geometry = scan_geometry(scan)
    s, r, c = np.argwhere(scan.pixels > 2500)[0]
    world = geometry.affine @ [c, r, s, 1]
    assert any(np.allclose(world, affine @ [*v, 1]) for v in np.argwhere(data == 3000))


def _tcia_with_marker(src, path, orientation=None, z=None):
    ds = pydicom.dcmread(src)
    pixels = ds.pixel_array.copy()
    pixels[MARK] = int((3000 - float(ds.RescaleIntercept)) / float(ds.RescaleSlope))
    ds.PixelData = pixels.tobytes()
    if orientation is not None:
        ds.ImageOrientationPatient = orientation
    if z is not None:
        ds.ImagePositionPatient = [ds.ImagePositionPatient[0], ds.ImagePositionPatient[1], z]
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(path)
    return ds


def _stored_world(ds, i, j):
    """RAS mm of stored pixel (row i, column j) from the header alone."""
    x, y = np.asarray(ds.ImageOrientationPatient, float).reshape(2, 3)
    row, col = (float(v) for v in ds.PixelSpacing)
    lps = np.asarray(ds.ImagePositionPatient, float) + j * col * x + i * row * y
    return np.array([-lps[0], -lps[1], lps[2]])


def test_dicom_seg_and_nifti_of_a_real_slice(shared_data, tmp_path):
    src = os.path.join(shared_data, TCIA)
    marked = str(tmp_path / "slice.dcm")
    ds = _tcia_with_marker(src, marked)
    scan = read_scan(marked)
    out = tmp_path / "out"
    out.mkdir()
    outputs = export_lesion_masks(scan, _marked_labels(scan), str(out), software_version="9.9")
    assert outputs["dicom_seg"]["file"] == "lesions_seg.dcm"
    assert outputs["dicom_seg"]["referenced_instances"] == 1
    seg = hd.seg.segread(str(out / "lesions_seg.dcm"))
    assert seg.SegmentationType == "BINARY" and seg.Modality == "SEG"
    (segment,) = seg.SegmentSequence
    assert segment.SegmentLabel == "COVID-19 lesion"
    category = segment.SegmentedPropertyCategoryCodeSequence[0]
    kind = segment.SegmentedPropertyTypeCodeSequence[0]
    assert (category.CodingSchemeDesignator, category.CodeValue) == ("SCT", "49755003")
    assert (kind.CodingSchemeDesignator, kind.CodeValue) == ("SCT", "52988006")
    assert [uid for _, _, uid in seg.get_source_image_uids()] == [ds.SOPInstanceUID]
    assert seg.StudyInstanceUID == ds.StudyInstanceUID
    assert seg.FrameOfReferenceUID == ds.FrameOfReferenceUID
    frame = seg.pixel_array.reshape(-1, ds.Rows, ds.Columns)[0]
    expected = np.zeros((ds.Rows, ds.Columns), bool)
    expected[MARK] = True
    assert np.array_equal(frame > 0, expected)
    # NIfTI of a DICOM input: the series geometry
    mask = nib.load(str(out / "lesions.nii.gz"))
    assert mask.shape == (ds.Columns, ds.Rows, 1)
    c, r, _ = np.argwhere(np.asarray(mask.dataobj) > 0).min(axis=0)
    assert np.allclose(mask.affine @ [c, r, 0, 1], [*_stored_world(ds, 100, 40), 1], atol=1e-3)


def test_dicom_seg_of_a_flipped_series_follows_the_stored_pixels(shared_data, tmp_path):
    """Columns stored towards the patient's right: the reader mirrors them, the SEG does not."""
    src = os.path.join(shared_data, TCIA)
    folder = tmp_path / "series"
    folder.mkdir()
    flipped = [-1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    headers = [
        _tcia_with_marker(src, str(folder / f"im{k}.dcm"), flipped, z)
        for k, z in enumerate((-190.0, -195.0, -192.5))
    ]
    scan = read_scan(str(folder))
    labels = _marked_labels(scan)
    labels[[0, 2]] = 0  # the lesion only on the middle slice (z = -192.5, file im2.dcm)
    s, r, c = np.argwhere(labels).min(axis=0)
    assert (s, r) == (1, 100) and c == 512 - 60  # mirrored by the reader
    out = tmp_path / "out"
    out.mkdir()
    outputs = export_lesion_masks(scan, labels, str(out), software_version="t", model_name="m")
    assert outputs["dicom_seg"]["referenced_instances"] == 3
    seg = hd.seg.segread(str(out / "lesions_seg.dcm"))
    referenced = [uid for _, _, uid in seg.get_source_image_uids()]
    assert sorted(referenced) == sorted(h.SOPInstanceUID for h in headers)
    frames = seg.pixel_array.reshape(-1, 512, 512)
    by_uid = {
        f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID: k
        for k, f in enumerate(seg.PerFrameFunctionalGroupsSequence)
    }
    expected = np.zeros((512, 512), bool)
    expected[MARK] = True
    for h in headers:
        want = expected if h.ImagePositionPatient[2] == -192.5 else np.zeros_like(expected)
        assert np.array_equal(frames[by_uid[h.SOPInstanceUID]] > 0, want)
    mask = nib.load(str(out / "lesions.nii.gz"))
    assert mask.shape == (512, 512, 3)
    world = mask.affine @ [c, r, s, 1]
    middle = headers[2]
    assert np.allclose(world[:3], _stored_world(middle, 100, 59), atol=1e-3)


def test_png_label_map_states_it_has_no_geometry(tmp_path):
    from PIL import Image

    Image.fromarray(np.full((40, 50), 90, np.uint8)).save(tmp_path / "slice.png")
    scan = read_scan(str(tmp_path / "slice.png"))
    labels = np.zeros(scan.pixels.shape, np.uint16)
    labels[0, 3:5, 7:9] = 1
    outputs = export_lesion_masks(scan, labels, str(tmp_path), software_version="t")
    assert outputs["label_map"]["geometry"].startswith("none in the input")
    mask = nib.load(str(tmp_path / "lesions.nii.gz"))
    # NIfTI's way of saying "no orientation": both codes 0, voxel sizes only
    assert mask.shape == (50, 40, 1) and mask.header.get_zooms() == (1.0, 1.0, 1.0)
    assert int(mask.header["sform_code"]) == int(mask.header["qform_code"]) == 0
    assert np.array_equal(np.asarray(mask.dataobj)[..., 0].T, labels[0])
    assert not os.path.exists(tmp_path / "lesions_seg.dcm")


@pytest.mark.parametrize("name", ["lidc_minimal_header/0.dcm"])
def test_dicom_without_patient_module_gets_a_nifti_and_a_note(shared_data, tmp_path, name):
    scan = read_scan(os.path.join(shared_data, "dicom", name))
    outputs = export_lesion_masks(
        scan, np.zeros(scan.pixels.shape, np.uint16), str(tmp_path), software_version="t"
    )
    assert os.path.isfile(tmp_path / "lesions.nii.gz")
    assert outputs["dicom_seg"]["file"] is None
    assert "PatientID" in outputs["dicom_seg"]["note"]
