#!/usr/bin/env python
"""Evaluate an ensemble of trained classifiers from their saved predictions.

    python tools/ensemble_classifier_predictions.py \
        --runs output/<run A>/inference/ct_ucsd_val output/<run B>/inference/ct_ucsd_val \
        --output output/ensemble/inference/ct_ucsd_val

Averages the class probabilities per image over the runs (the folders a
``CTClassificationEvaluator`` wrote, e.g. by ``tools/train_net.py --eval-only``), decides by
the argmax and writes the evaluator's files for the ensemble into ``--output`` (refused if it
holds an earlier ensemble, unless ``--overwrite``); run it once per split. The library:
ct_lesion_d2/evaluation/ensemble.py.
"""

from ct_lesion_d2.evaluation.ensemble import main

if __name__ == "__main__":
    main()
