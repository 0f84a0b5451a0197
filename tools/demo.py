#!/usr/bin/env python
"""The main job end to end on the embedded synthetic data, with no download.

Generates synthetic CT-like slices, converts them to COCO, trains the ResNet18_T1 lesion
segmenter with the CPU schedule, evaluates it with COCOEvaluator, writes Visualizer panels and
prints the AP. Then trains the COVID-CT-Mask-Net classifier (Control / Common Pneumonia /
COVID-19) on that segmenter's ranked RoI batches and prints its confusion matrix on the
validation slices. About 9 minutes on 2 CPU cores.

    python tools/demo.py --output output/demo

The steps: ct_lesion_d2/demo.py.
"""

from ct_lesion_d2.demo import main

if __name__ == "__main__":
    main()
