#!/usr/bin/env python
"""Choose a two-class classifier's decision threshold on its validation predictions.

    python tools/choose_decision_threshold.py --val output/<run>/inference/ct_ucsd_val \
        --report output/<run>/inference/ct_ucsd_test

Reads the folders a ``CTClassificationEvaluator`` wrote (``tools/train_net.py``, the slice
baselines), takes Youden's threshold of the positive class's probability on ``--val`` alone and
prints every split's accuracy, sensitivity and specificity at the argmax and at that threshold,
with the override that makes the model decide so (``MODEL.CT_CLASSIFIER.DECISION_THRESHOLD``).
The library: ct_lesion_d2/evaluation/operating_point.py.
"""

from ct_lesion_d2.evaluation.operating_point import main

if __name__ == "__main__":
    main()
