"""Benchmarks of ct-lesion-d2: measured runs and the baselines they are compared with."""
