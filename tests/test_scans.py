"""Scan readers on the real DICOM samples: HU, padding, orientation, spacing, series order,
NIfTI round trip, compressed transfer syntaxes and the errors on bad files."""

import io
import os
import shutil

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder
from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit, RLELossless

from ct_lesion_d2.data.io import DatasetFormatError
from ct_lesion_d2.data.readers import (
    PADDING_HU,
    list_dicom_series,
    read_dicom_file,
    read_dicom_series,
    read_image_slices,
    read_nifti,
    read_scan,
    write_nifti,
)

TCIA = {
    # file: (pixel spacing, slice thickness, position along the normal)
    "A002304/axial/19001231-076.dcm": (0.826172, 2.5, -194.75),
    "A002304/axial/19010112-135.dcm": (0.640625, 1.25, -162.0),
    "A027284/axial/19000925-116.dcm": (0.878906, 2.5, -335.0),
    "A027284/axial/19001231-131.dcm": (0.9375, 2.5, -394.0),
}
LIDC = "dicom/lidc_minimal_header/0.dcm"


def tcia(shared_data, name):
    return os.path.join(shared_data, "dicom", "tcia_covid19_ny_sbu", name)


def write_variant(src, dst, pixels=None, **tags):
    """Copy a DICOM file with new pixel values (stored units) and header values."""
    ds = pydicom.dcmread(src)
    if pixels is not None:
        dtype = ds.pixel_array.dtype
        ds.Rows, ds.Columns = pixels.shape
        ds.PixelData = np.ascontiguousarray(pixels.astype(dtype)).tobytes()
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.save_as(dst)
    return str(dst)


def spine_row(hu):
    """Median row of dense bone (> 600 HU) in the central column band: the vertebral body
    (contrast-filled vessels and the sternum stay below or are smaller)."""
    width = hu.shape[1]
    band = hu[:, width // 2 - 25 : width // 2 + 25]
    return np.median(np.argwhere(band > 600)[:, 0])


@pytest.mark.parametrize("name", sorted(TCIA))
def test_tcia_slices_in_hu_with_padding_and_spacing(shared_data, name):
    path = tcia(shared_data, name)
    scan = read_scan(path)
    spacing, thickness, position = TCIA[name]
    assert scan.pixels.shape == (1, 512, 512) and scan.pixels.dtype == np.float32
    assert scan.is_hu and scan.modality == "CT" and scan.orientation == "axial"
    assert scan.spacing_mm == pytest.approx((spacing, spacing))
    assert scan.slice_thickness_mm == pytest.approx(thickness)
    assert scan.positions_mm == pytest.approx([position])
    ds = pydicom.dcmread(path)
    # padding = the stored PixelPaddingValue (-2000), outside the circular field of view
    stored = ds.pixel_array
    assert np.array_equal(scan.padding_mask[0], stored == -2000)
    assert 0.15 < scan.padding_mask.mean() < 0.3 and scan.padding_mask[0, 0, 0]
    assert (scan.pixels[scan.padding_mask] == PADDING_HU).all()
    inside = scan.pixels[~scan.padding_mask]
    # RescaleIntercept -1024: air at the bottom of the HU scale, bone and metal up to 3071
    assert inside.min() == -1024 and 1000 < inside.max() <= 3071
    expected = stored.astype(np.float32) - 1024
    assert np.array_equal(scan.pixels[0][~scan.padding_mask[0]], expected[stored != -2000])
    assert ((inside > -1024) & (inside < -900)).mean() > 0.05  # air and lung
    # radiological orientation: the spine is in the lower (posterior) half
    assert spine_row(scan.pixels[0]) > 300


def test_minimal_header_without_modality(shared_data):
    path = os.path.join(shared_data, LIDC)
    scan = read_dicom_file(path)
    assert scan.modality is None and scan.is_hu
    assert scan.spacing_mm == (0.625, 0.625) and scan.slice_thickness_mm == 1.0
    assert scan.slice_names == ["0.dcm"] and scan.series_uid.startswith("1.2.826.0.1.3680043")
    # no padding tag: the -2048 HU outside the field of view is below any tissue or air
    raw = pydicom.dcmread(path).pixel_array
    assert np.array_equal(scan.padding_mask[0], raw == -2048)
    inside = scan.pixels[0][~scan.padding_mask[0]]
    assert inside.min() >= -1100 and inside.max() > 1000
    assert spine_row(scan.pixels[0]) > 300


@pytest.mark.parametrize(
    "orientation,change",
    [
        ([-1, 0, 0, 0, -1, 0], lambda a: a[::-1, ::-1]),  # stored upside down and mirrored
        ([1, 0, 0, 0, -1, 0], lambda a: a[::-1]),
        ([0, 1, 0, 1, 0, 0], lambda a: a.T),  # stored transposed
    ],
)
def test_stored_orientation_is_undone(shared_data, tmp_path, orientation, change):
    src = tcia(shared_data, "A002304/axial/19010112-135.dcm")
    reference = read_dicom_file(src)
    stored = change(pydicom.dcmread(src).pixel_array)
    flipped = write_variant(src, tmp_path / "x.dcm", stored, ImageOrientationPatient=orientation)
    scan = read_dicom_file(flipped)
    assert scan.orientation == "axial"
    assert np.array_equal(scan.pixels, reference.pixels)


def test_oblique_slice_kept_as_stored_with_warning(shared_data, tmp_path):
    src = tcia(shared_data, "A002304/axial/19010112-135.dcm")
    oblique = write_variant(
        src, tmp_path / "o.dcm", ImageOrientationPatient=[1, 0, 0, 0, 0.8, -0.6]
    )
    with pytest.warns(UserWarning, match="o.dcm: slice is not axis-aligned axial"):
        scan = read_dicom_file(oblique)
    assert scan.orientation == "as stored"


def make_series(shared_data, folder, positions, names):
    """A series from the LIDC slice: slice k at ``positions[k]`` with a marker of 100 * k HU
    in its top-left corner, written as ``names[k]``; instance numbers run backwards."""
    src = os.path.join(shared_data, LIDC)
    base = pydicom.dcmread(src).pixel_array
    os.makedirs(folder, exist_ok=True)
    for k, (z, name) in enumerate(zip(positions, names)):
        pixels = base.copy()
        pixels[:4, :4] = 100 * k
        write_variant(
            src,
            os.path.join(folder, name),
            pixels,
            ImagePositionPatient=[0.0, 0.0, z],
            InstanceNumber=len(positions) - k,
            SOPInstanceUID=pydicom.uid.generate_uid(),
        )
    return str(folder)


def test_series_sorted_by_position_not_file_name(shared_data, tmp_path):
    positions = [12.5, -5.0, 30.0, 0.0, 7.5]
    names = ["slice_001.dcm", "slice_002.dcm", "a.dcm", "slice_010.dcm", "z.dcm"]
    folder = make_series(shared_data, tmp_path / "series", positions, names)
    scan = read_dicom_series(folder)
    order = np.argsort(positions)
    assert scan.positions_mm == sorted(positions)
    assert scan.slice_names == [names[k] for k in order]
    assert scan.pixels[:, 0, 0].tolist() == [100.0 * k for k in order]
    assert scan.num_slices == 5 and scan.spacing_mm == (0.625, 0.625)
    assert read_scan(folder).slice_names == scan.slice_names


def test_mixed_series_refused_and_chosen(shared_data):
    folder = tcia(shared_data, "A002304/axial")
    series = list_dicom_series(folder)
    assert len(series) == 2
    with pytest.raises(DatasetFormatError, match="mixes 2 DICOM series") as info:
        read_scan(folder)
    for uid in series:
        assert uid in str(info.value)
    assert folder in str(info.value)
    for uid, (path,) in series.items():
        scan = read_scan(folder, series_uid=uid)
        assert scan.series_uid == uid and scan.slice_names == [os.path.basename(path)]
    with pytest.raises(DatasetFormatError, match="no series '1.2.3'"):
        read_dicom_series(folder, series_uid="1.2.3")


def test_duplicate_positions_refused(shared_data, tmp_path):
    folder = make_series(
        shared_data, tmp_path / "dup", [0.0, 2.5, 2.5], ["a.dcm", "b.dcm", "c.dcm"]
    )
    with pytest.raises(DatasetFormatError, match=r"c\.dcm: same slice position 2.500 mm"):
        read_dicom_series(folder)


def test_nifti_round_trip_and_orientation(shared_data, tmp_path):
    folder = make_series(shared_data, tmp_path / "s", [0.0, 1.0, 2.0], ["a.dcm", "b.dcm", "c.dcm"])
    scan = read_dicom_series(folder)
    path = str(tmp_path / "scan.nii.gz")
    write_nifti(scan, path)
    back = read_nifti(path)
    assert np.array_equal(back.pixels, scan.pixels)
    assert np.array_equal(back.padding_mask, scan.padding_mask) and back.padding_mask.any()
    assert back.spacing_mm == pytest.approx(scan.spacing_mm)
    assert back.slice_thickness_mm == pytest.approx(1.0)
    assert back.positions_mm == pytest.approx(scan.positions_mm)
    assert spine_row(back.pixels[0]) > 300
    assert read_scan(path).slice_names == ["scan.nii.gz[0]", "scan.nii.gz[1]", "scan.nii.gz[2]"]

    # the same volume stored in RAS order (as many converters write it) reads the same
    import nibabel as nib

    image = nib.load(path)
    ras = nib.Nifti1Image(
        np.asarray(image.dataobj)[::-1, ::-1, :].copy(),
        image.affine @ np.array([[-1, 0, 0, 511], [0, -1, 0, 511], [0, 0, 1, 0], [0, 0, 0, 1]]),
    )
    nib.save(ras, str(tmp_path / "ras.nii"))
    assert np.array_equal(read_nifti(str(tmp_path / "ras.nii")).pixels, scan.pixels)


def test_nifti_nan_voxels_become_padding(tmp_path):
    import nibabel as nib

    data = np.full((6, 5, 2), -500.0, dtype=np.float32)
    data[0, 0, 1] = np.nan
    data[5, 4, 0] = np.inf
    nib.save(nib.Nifti1Image(data, np.diag([0.7, 0.8, 2.0, 1.0])), str(tmp_path / "n.nii"))
    with pytest.warns(UserWarning, match=r"n.nii: 2 NaN or infinite voxels set to padding"):
        scan = read_nifti(str(tmp_path / "n.nii"))
    assert scan.pixels.shape == (2, 5, 6) and np.isfinite(scan.pixels).all()
    assert scan.spacing_mm == pytest.approx((0.8, 0.7)) and scan.slice_thickness_mm == 2.0
    assert scan.padding_mask.sum() == 2
    assert (scan.pixels[scan.padding_mask] == PADDING_HU).all()
    assert (scan.pixels[~scan.padding_mask] == -500).all()


def test_compressed_transfer_syntaxes(shared_data, tmp_path):
    src = os.path.join(shared_data, LIDC)
    reference = read_dicom_file(src)
    # RLE Lossless: decoded by pydicom itself, exactly
    ds = pydicom.dcmread(src)
    ds.compress(RLELossless)
    ds.save_as(tmp_path / "rle.dcm")
    assert np.array_equal(read_dicom_file(str(tmp_path / "rle.dcm")).pixels, reference.pixels)

    # 8-bit lung-window encodings with the rescale that maps them back to HU
    grey = np.clip((pydicom.dcmread(src).pixel_array + 1350.0) / 1500 * 255, 0, 255)
    grey = grey.round().astype(np.uint8)
    for syntax, fmt, options in [
        (JPEGBaseline8Bit, "JPEG", {"quality": 95}),
        (JPEG2000Lossless, "JPEG2000", {"irreversible": False}),
    ]:
        buffer = io.BytesIO()
        Image.fromarray(grey).save(buffer, format=fmt, **options)
        ds = pydicom.dcmread(src)
        ds.file_meta.TransferSyntaxUID = syntax
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = encapsulate([buffer.getvalue()])
        ds["PixelData"].VR = "OB"
        ds.RescaleSlope, ds.RescaleIntercept = "5.88235294", "-1350"
        path = str(tmp_path / f"{fmt}.dcm")
        ds.save_as(path, enforce_file_format=True)
        if fmt == "JPEG":
            # pylibjpeg-libjpeg (a requirement) decodes it; lossy, so close to the grey values
            hu = read_dicom_file(path).pixels[0]
            assert np.abs(hu - (grey * 5.88235294 - 1350)).mean() < 10
        else:
            # a JPEG 2000 plugin of pydicom: pylibjpeg-openjpeg, or Pillow from version 10 on
            if not get_decoder(JPEG2000Lossless).is_available:
                with pytest.raises(DatasetFormatError, match="pylibjpeg-openjpeg") as info:
                    read_dicom_file(path)
                assert path in str(info.value) and "JPEG 2000" in str(info.value)
            else:
                # lossless: the grey values exactly, in the reader's float32 HU
                hu = read_dicom_file(path).pixels[0]
                assert np.allclose(hu, grey * 5.88235294 - 1350, rtol=0, atol=1e-3)


def test_bad_dicom_files_name_the_file(shared_data, tmp_path):
    src = os.path.join(shared_data, LIDC)
    data = open(src, "rb").read()
    not_dicom = tmp_path / "notes.dcm"
    not_dicom.write_text("not an image")
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(data[: len(data) // 2])
    ds = pydicom.dcmread(src)
    del ds.PixelData
    ds.save_as(tmp_path / "no_pixels.dcm")
    write_variant(src, tmp_path / "bad_orientation.dcm", ImageOrientationPatient=[1, 0, 0, 0, 1])
    cases = [
        (tmp_path / "bad_orientation.dcm", "malformed DICOM header value"),
        (not_dicom, "not a DICOM file"),
        (truncated, "truncated or corrupt"),
        (tmp_path / "no_pixels.dcm", "no pixel data"),
        (tmp_path / "missing.dcm", "not found"),
    ]
    for path, problem in cases:
        with pytest.raises(DatasetFormatError, match=problem) as info:
            read_scan(str(path))
        assert str(path) in str(info.value)


def test_series_with_inconsistent_sizes(shared_data, tmp_path):
    folder = make_series(shared_data, tmp_path / "s", [0.0, 1.0], ["a.dcm", "b.dcm"])
    small = pydicom.dcmread(os.path.join(folder, "b.dcm")).pixel_array[:256, :256]
    write_variant(os.path.join(folder, "b.dcm"), os.path.join(folder, "b.dcm"), small)
    with pytest.raises(DatasetFormatError, match=r"b\.dcm: slice is 256x256 .* a\.dcm .* 512x512"):
        read_dicom_series(folder)
    # a stray non-DICOM file in a series folder is named too
    shutil.copy(os.path.join(shared_data, "medseg100", "images", "medseg_000.png"), folder)
    with pytest.raises(DatasetFormatError, match="mixes DICOM files and image slices"):
        read_scan(folder)
    (tmp_path / "s" / "README").write_text("a note")
    with pytest.raises(DatasetFormatError, match="README: not a DICOM file"):
        read_dicom_series(folder)


def test_image_slices_natural_order_and_sizes(tmp_path):
    for k in (10, 2, 1):
        Image.fromarray(np.full((20, 30), k, dtype=np.uint8)).save(tmp_path / f"slice{k}.png")
    scan = read_image_slices(str(tmp_path))
    assert not scan.is_hu and scan.spacing_mm is None
    assert scan.slice_names == ["slice1.png", "slice2.png", "slice10.png"]
    assert scan.pixels[:, 0, 0].tolist() == [1, 2, 10]
    assert read_scan(str(tmp_path / "slice2.png")).pixels.shape == (1, 20, 30)
    Image.fromarray(np.zeros((21, 30), dtype=np.uint8)).save(tmp_path / "slice11.png")
    with pytest.raises(DatasetFormatError, match=r"slice11.png: slice is 21x30 .* slice1.png"):
        read_image_slices(str(tmp_path))
