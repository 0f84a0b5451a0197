"""Speed, memory, FLOPs, sizes and accuracy of the models (docs/BENCHMARKS.md).

- ``measure``: latency, peak memory, fvcore FLOPs, parameter counts, the machine header;
- ``stages``: inference stage times (hooks on one forward), training iterations, profiles;
- ``segmentation`` / ``classification``: the segmenter and classifier benchmarks
  (``tools/benchmark_seg.py``, ``tools/benchmark_classifier.py``);
- ``accuracy``: AP of config variants with jackknife errors (``tools/benchmark_accuracy.py``);
- ``params``: model sizes beside the paper's Table 1 (``tools/count_params.py``);
- ``unet_baseline``: the MONAI U-Net baseline (an optional extra, imported by its module path
  only, so that importing the package never needs MONAI).
"""

from .measure import PeakMemory, count, gflops, machine, measure

__all__ = ["PeakMemory", "count", "gflops", "machine", "measure"]
