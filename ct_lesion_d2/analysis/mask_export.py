"""Lesion masks in the formats clinical software opens: a NIfTI label map on the input's grid
and, for DICOM input, a DICOM Segmentation (SEG) object referencing the source series.

- NIfTI: for NIfTI input, the voxel order and affine of the input file itself (so the mask
  overlays the volume in 3D Slicer or ITK-SNAP; a coronal or sagittal volume resampled to
  axial slices gets its mask back on its own grid); for DICOM, the affine of the series geometry
  (:mod:`ct_lesion_d2.data.readers.geometry`); for image files, a spacing-only affine, stated
  as such. Voxel values are the lesion ids of the report (0 = background).
- DICOM SEG (``highdicom``): one binary segment "COVID-19 lesion" (SCT 49755003
  "Morphologically abnormal structure" / SCT 52988006 "Lesion"), one frame per source slice,
  in the source's stored pixel order, referencing every source SOPInstanceUID (of a coronal or
  sagittal series resampled to axial slices: each source slice's frame is read back from the
  axial grid, so the frames follow the stored coronal or sagittal slices).
"""

import logging
import os
import warnings

import numpy as np

from ..data.readers.geometry import nifti_volume_grid, scan_geometry, stored_to_scan_index

__all__ = [
    "LABEL_MAP_NAME",
    "SEG_NAME",
    "export_lesion_masks",
    "write_dicom_seg",
    "write_label_map",
]

logger = logging.getLogger(__name__)

LABEL_MAP_NAME = "lesions.nii.gz"
SEG_NAME = "lesions_seg.dcm"
SEGMENT_LABEL = "COVID-19 lesion"


def _nifti_input_grid(scan, labels):
    """``labels`` (the reader's grid) put back in the input NIfTI's own voxel order."""
    import nibabel as nib

    image = nib.load(scan.source)
    grid, _ = nifti_volume_grid(image)
    return grid.to_volume(labels).reshape(image.shape), image


def write_label_map(scan, labels, path, geometry=None):
    """Write the lesion label map as NIfTI, aligned with the input volume.

    Args:
        scan (Scan): the scan the labels belong to.
        labels (np.ndarray): (S, H, W) integer label map on ``scan.pixels``' grid.
        path (str): ``.nii.gz`` file to write.
        geometry (ScanGeometry or None): from :func:`scan_geometry`; computed when None.

    Returns:
        str: how the affine was obtained.
    """
    import nibabel as nib

    labels = np.asarray(labels, dtype=np.uint16)
    if labels.shape != scan.pixels.shape:
        raise ValueError(
            f"label map shape {labels.shape} differs from the scan's {scan.pixels.shape}"
        )
    geometry = geometry or scan_geometry(scan)
    if geometry.description == "the input NIfTI's affine":
        data, source = _nifti_input_grid(scan, labels)
        image = nib.Nifti1Image(np.ascontiguousarray(data), source.affine)
        image.set_qform(source.get_qform(), code=int(source.header["qform_code"]))
        image.set_sform(source.get_sform(), code=int(source.header["sform_code"]))
    else:
        image = nib.Nifti1Image(np.ascontiguousarray(labels.transpose(2, 1, 0)), geometry.affine)
        image.set_qform(geometry.affine, code=1 if geometry.known else 0)
        image.set_sform(geometry.affine, code=1 if geometry.known else 0)
    image.set_data_dtype(np.uint16)
    image.header.set_xyzt_units("mm")
    nib.save(image, path)
    return geometry.description


def write_dicom_seg(labels, path, geometry, *, software_version, model_name):
    """Write the lesions (all ids as one binary segment) as a DICOM SEG of the source series.

    Args:
        labels (np.ndarray): (S, H, W) label map on the grid of a DICOM scan.
        path (str): the ``.dcm`` file to write.
        geometry (ScanGeometry): of the scan, with known position and orientation and
            ``dicom_files``.
        software_version (str): recorded as SoftwareVersions and the algorithm version.
        model_name (str): the algorithm name (e.g. the config's name).

    Returns:
        pydicom.Dataset: the Segmentation written.
    """
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    sources = [pydicom.dcmread(f) for f in geometry.dicom_files]
    frames = np.zeros((len(sources), int(sources[0].Rows), int(sources[0].Columns)), dtype=bool)
    for k, ds in enumerate(sources):
        s, rows, cols = stored_to_scan_index(geometry.affine, ds, labels.shape)
        frames[k] = labels[s, rows, cols] > 0
    algorithm = hd.AlgorithmIdentificationSequence(
        name=model_name or "ct-lesion-d2",
        family=codes.cid7162.ArtificialIntelligence,
        version=software_version,
    )
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=SEGMENT_LABEL,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Lesion,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
    )
    with warnings.catch_warnings():
        # highdicom warns about the source's single-component PatientName (TCIA's IDs)
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person")
        seg = _segmentation(hd, sources, frames, segment, software_version, model_name)
    seg.save_as(path)
    return seg


def _segmentation(hd, sources, frames, segment, software_version, model_name):
    return hd.seg.Segmentation(
        source_images=sources,
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment],
        series_instance_uid=hd.UID(),
        series_number=99,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="ct-lesion-d2",
        manufacturer_model_name=(model_name or "ct-lesion-d2")[:64],
        software_versions=software_version,
        device_serial_number="none",
        content_description="COVID-19 lesions predicted by ct-lesion-d2 (research use)",
        series_description="ct-lesion-d2 lesions",
        omit_empty_frames=False,
    )


def export_lesion_masks(scan, labels, folder, *, software_version, model_name=None, geometry=None):
    """Write ``lesions.nii.gz`` and, for DICOM input, ``lesions_seg.dcm`` into ``folder``.

    A SEG that cannot be made (a multi-frame file, headers without geometry, a source
    highdicom refuses) is skipped with a warning; the returned entry says why.

    Args:
        scan (Scan): the predicted scan.
        labels (np.ndarray): (S, H, W) lesion label map (``LesionTable.labels``).
        folder (str): existing output folder.
        software_version (str): the package version.
        model_name (str or None): names the algorithm in the SEG.
        geometry (ScanGeometry or None): from :func:`scan_geometry`; computed when None.

    Returns:
        dict: the report's ``outputs`` entry: ``label_map`` (``file``, ``geometry``,
        ``values``) and ``dicom_seg`` (``file`` or None, with ``series_instance_uid`` and
        ``referenced_instances``, or a ``note``).
    """
    geometry = geometry or scan_geometry(scan)
    description = write_label_map(scan, labels, os.path.join(folder, LABEL_MAP_NAME), geometry)
    outputs = {
        "label_map": {
            "file": LABEL_MAP_NAME,
            "geometry": description,
            "values": "0 = background, k = lesion k of the lesions table",
        },
        "dicom_seg": {"file": None, "note": "input is not DICOM"},
    }
    if geometry.dicom_files is None:
        if scan.series_uid is not None or scan.modality is not None:
            outputs["dicom_seg"]["note"] = "multi-frame DICOM input: no SEG written"
        return outputs
    if not geometry.known:
        outputs["dicom_seg"]["note"] = "DICOM headers without position/orientation: no SEG"
        return outputs
    try:
        seg = write_dicom_seg(
            labels,
            os.path.join(folder, SEG_NAME),
            geometry,
            software_version=software_version,
            model_name=model_name,
        )
    except (ValueError, TypeError, AttributeError, KeyError) as e:
        logger.warning(f"{scan.source}: DICOM SEG not written ({type(e).__name__}: {e})")
        outputs["dicom_seg"]["note"] = f"not written: {type(e).__name__}: {e}"
        return outputs
    outputs["dicom_seg"] = {
        "file": SEG_NAME,
        "series_instance_uid": str(seg.SeriesInstanceUID),
        "referenced_instances": len(geometry.dicom_files),
        "segment": SEGMENT_LABEL,
    }
    return outputs
