#!/usr/bin/env python
"""Benchmark inference and training of the segmentation variants: eager and optimised, exported.

    python tools/benchmark_seg.py                                   # all seven, every mode
    python tools/benchmark_seg.py --images ../shared/data/medseg100/images \\
        --weights mask_rcnn_R18_T1=output/.../model_final.pth --json bench.json
    python tools/benchmark_seg.py --models mask_rcnn_R18_T1 mask_rcnn_R50 --modes eager optimized
    python tools/benchmark_seg.py --models mask_rcnn_R18_T1 --stages --train-iters 0
    python tools/benchmark_seg.py --detections 16     # every model exactly 16 detections

The options and what is measured: ct_lesion_d2/benchmark/segmentation.py.
"""

from ct_lesion_d2.benchmark.segmentation import main

if __name__ == "__main__":
    main()
