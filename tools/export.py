#!/usr/bin/env python
"""Export a trained segmenter or classifier to TorchScript and ONNX, and check the exports.

    python tools/export.py --config-file configs/mask_rcnn_R18_T1_FPN1_medseg100_cpu.yaml \\
        --output exported/r18_t1 --images ../shared/data/medseg100/images \\
        MODEL.WEIGHTS output/mask_rcnn_R18_T1_FPN1_medseg100_cpu/model_final.pth
    python tools/export.py ... --eval-dataset ct_lesion_medseg100_val   # + AP, eager and exported
    python tools/export.py --config-file configs/classifier_R18_T1_covidx.yaml \\
        --output exported/cls --images ../shared/data/medseg100/images \\
        MODEL.CT_CLASSIFIER.SEGMENTATION_WEIGHTS output/.../model_final.pth

What is checked and written: ct_lesion_d2/export/checked_export.py (``--help``).
"""

from ct_lesion_d2.export.checked_export import main

if __name__ == "__main__":
    main()
