#!/usr/bin/env python
"""Benchmark the COVID-CT-Mask-Net classifiers, and a CT volume through segmenter + classifier.

    python tools/benchmark_classifier.py --images ../shared/data/medseg100/images \\
        --segmentation-weights output/.../model_final.pth --json bench_cls.json
    python tools/benchmark_classifier.py --models classifier_R18_T1 --volume-slices 0
    python tools/benchmark_classifier.py --models --volume-runs eager:1 optimized:4 onnxruntime:1:2

The options and what is measured: ct_lesion_d2/benchmark/classification.py.
"""

from ct_lesion_d2.benchmark.classification import main

if __name__ == "__main__":
    main()
