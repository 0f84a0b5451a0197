#!/usr/bin/env python
"""Predict COVID-19 lesions (and, with a classifier, the slice class) on patients' scans.

Inputs: PNG/JPG slices or folders of them, DICOM files, DICOM series folders, NIfTI volumes.
For each scan, writes under ``--output/<scan>/``: ``report.json`` (schema in docs/PREDICT.md),
``report.html`` (self-contained), ``panels/`` (per-slice analysis figures, PNG), the lesion
label map ``lesions.nii.gz`` and, for DICOM input, the DICOM SEG ``lesions_seg.dcm``. The folder
is written beside its place and swapped in when complete; an existing one is replaced only with
``--overwrite``.

    python tools/predict.py --config-file configs/mask_rcnn_R18_T1_FPN1_medseg100_cpu.yaml \\
        --weights output/.../model_final.pth --input scans/patient1/ ct.nii.gz --output reports
    python tools/predict.py ... --classifier-config configs/classifier_R18_T1_covidx.yaml \\
        --classifier-weights output/classifier_R18_T1_covidx/model_final.pth
    python tools/predict.py --classifier-model ct_classifier_R18_T1_ucsd --input slice.png \\
        --output reports          # the zoo segmenter and the zoo's UCSD slice classifier

Options: ``--help``; the code: ct_lesion_d2/analysis/predict.py.
"""

from ct_lesion_d2.analysis.predict import main

if __name__ == "__main__":
    main()
