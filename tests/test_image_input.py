"""Image slices whose intensity convention must be stated: 16-bit and float refused by default,
read as HU + offset when stated; too small refused; very large downscaled with a warning."""

import os

import numpy as np
import pytest
from PIL import Image

from ct_lesion_d2.data.io import DatasetFormatError
from ct_lesion_d2.data.readers import read_scan
from ct_lesion_d2.data.readers.image_input import ImageInputOptions
from ct_lesion_d2.data.transforms import apply_ct_window

LIDC = "dicom/lidc_minimal_header/0.dcm"


def save(array, path, mode=None):
    Image.fromarray(array, mode=mode).save(path)
    return str(path)


def test_16_bit_png_is_refused_with_how_to_state_it(tmp_path):
    path = save(np.full((64, 80), 1024, np.uint16), tmp_path / "hu.png")
    with pytest.raises(DatasetFormatError) as e:
        read_scan(path, image_options=ImageInputOptions())
    assert str(e.value) == (
        f"{path}: 16-bit image (PIL mode I;16): the file does not say what its values mean, "
        "and scaling them by their range would change the contrast. State it, e.g. "
        "--input-units hu --hu-offset 1024 for values that are HU + 1024, or give the DICOM "
        "or NIfTI export instead"
    )
    with pytest.raises(DatasetFormatError, match="give the offset its exporter added"):
        read_scan(path, image_options=ImageInputOptions(units="hu"))
    # without options (dataset conversion, training records) the old behaviour is kept
    assert read_scan(path).pixels.dtype == np.float32


def test_float_tiff_is_refused_and_8_bit_cannot_be_hu(tmp_path):
    tiff = save(np.full((40, 40), -700.0, np.float32), tmp_path / "hu.tif", mode="F")
    with pytest.raises(DatasetFormatError, match=r"float image \(PIL mode F\)"):
        read_scan(tiff, image_options=ImageInputOptions())
    scan = read_scan(tiff, image_options=ImageInputOptions(units="hu"))
    assert scan.is_hu and np.all(scan.pixels == -700.0)
    assert scan.notes == ["float values read as HU + 0 (--input-units hu --hu-offset 0), then "
                          "windowed as DICOM"]  # fmt: skip
    png = save(np.full((40, 40), 90, np.uint8), tmp_path / "grey.png")
    with pytest.raises(DatasetFormatError) as e:
        read_scan(png, image_options=ImageInputOptions(units="hu", hu_offset=1024))
    assert str(e.value) == (
        f"{png}: 8-bit image (PIL mode L) cannot hold Hounsfield units; without "
        "--input-units hu it is read as an already windowed slice"
    )


def test_hu_plus_1024_png_reads_as_the_dicom_does(shared_data, tmp_path):
    dicom = read_scan(os.path.join(shared_data, LIDC))
    hu = dicom.pixels[0]
    path = save(np.clip(hu + 1024, 0, 65535).astype(np.uint16), tmp_path / "hu1024.png")
    scan = read_scan(path, image_options=ImageInputOptions(units="hu", hu_offset=1024))
    assert scan.is_hu and scan.notes[0].startswith("16-bit values read as HU + 1024")
    body = hu >= -1024
    assert np.array_equal(scan.pixels[0][body], hu[body])
    # what the model sees: the same lung-window slice as from the DICOM
    assert np.array_equal(apply_ct_window(scan.pixels[0]), apply_ct_window(np.maximum(hu, -1024)))


def test_small_image_refused_and_large_image_downscaled(tmp_path):
    small = save(np.zeros((20, 40), np.uint8), tmp_path / "small.png")
    with pytest.raises(DatasetFormatError) as e:
        read_scan(small, image_options=ImageInputOptions())
    assert str(e.value) == (
        f"{small}: image is 20x40 pixels (height x width); slices need at least 32 pixels a side"
    )
    big = np.zeros((2100, 2400), np.uint8)
    big[:, 1200:] = 200
    path = save(big, tmp_path / "big.png")
    options = ImageInputOptions(model_size=(512, 1333))
    with pytest.warns(UserWarning) as caught:
        scan = read_scan(path, image_options=options)
    message = (
        "big.png: 2100x2400 image downscaled to 512x585 (the model's input size; larger than "
        "2048 px): lesion masks and areas are at that size"
    )
    assert [str(w.message) for w in caught] == [message]
    assert scan.image_size == (512, 585) and scan.notes[1] == message
    assert scan.pixels[0, :, :290].max() == 0 and scan.pixels[0, :, 296:].min() == 200
    # at the limit nothing changes
    edge = save(np.zeros((2048, 100), np.uint8), tmp_path / "edge.png")
    assert read_scan(edge, image_options=options).image_size == (2048, 100)
