#!/usr/bin/env python
"""The paper's analysis figures (docs/PAPER.md, section 5) for the slices of a registered
dataset split.

For each slice: the analysis panel (predicted lesions with the Visualizer, the combined raw mask
score map, the ground truth, the classifier's class scores) and the RoI statistics (confidence
histogram, area against confidence, top 16 and whole batch); plus ``analysis.json``.

    python tools/analyze.py --config-file configs/mask_rcnn_R18_T1_FPN1_medseg100_cpu.yaml \\
        --weights output/.../model_final.pth --dataset ct_lesion_medseg100_val --output analysis

Options: ``--help``; the code: ct_lesion_d2/analysis/dataset_figures.py.
"""

from ct_lesion_d2.analysis.dataset_figures import main

if __name__ == "__main__":
    main()
