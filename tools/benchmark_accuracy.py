#!/usr/bin/env python
"""Check that a speed change keeps the segmenter's AP: eager vs optimised, and config variants.

    python tools/benchmark_accuracy.py \\
        --config-file configs/mask_rcnn_R18_T1_FPN1_medseg100_cpu.yaml \\
        --dataset ct_lesion_medseg100_val \\
        --variant "proposals300=MODEL.RPN.POST_NMS_TOPK_TEST 300" \\
        MODEL.WEIGHTS output/mask_rcnn_R18_T1_FPN1_medseg100_cpu/model_final.pth

The options and what is measured: ct_lesion_d2/benchmark/accuracy.py.
"""

from ct_lesion_d2.benchmark.accuracy import main

if __name__ == "__main__":
    main()
