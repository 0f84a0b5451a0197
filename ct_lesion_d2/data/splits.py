"""Train / val / test splits that keep every group (scan, patient, source document) whole.

The one place the project draws its splits: the lesion converters split by scan
(:func:`split_by_group`), the classification datasets by patient or source document, per class
(:func:`split_records_by_group`).
"""

import math

import numpy as np

__all__ = ["split_by_group", "split_records_by_group"]


def split_by_group(groups, val_fraction=0.2, seed=0):
    """Assign whole groups (scans, patients, source documents) to train or val.

    Args:
        groups (Iterable[str]): the group of each item.
        val_fraction (float): fraction of the groups (rounded up, at least one when there are
            two or more groups) that go to val.
        seed (int): seed of the shuffle of the sorted group names.

    Returns:
        set[str]: the groups in val; no group is in both splits.
    """
    unique = sorted(set(groups))
    if len(unique) < 2 or val_fraction <= 0:
        return set()
    order = np.random.default_rng(seed).permutation(len(unique))
    num_val = min(len(unique) - 1, max(1, math.ceil(len(unique) * val_fraction)))
    return {unique[i] for i in order[:num_val]}


def split_records_by_group(records, val_fraction=0.15, test_fraction=0.15, seed=0, stratify=True):
    """Split records into train, val and test with no ``group`` in two splits.

    Test takes ``ceil(test_fraction * groups)`` groups chosen by ``split_by_group(seed)``; val
    then takes ``ceil(val_fraction * groups)`` of the rest (seed + 1); train keeps at least one
    group. Fractions count groups, not records. With ``stratify`` this is done separately for
    the groups of each class (a group's class is the smallest ``class_id`` of its records), so
    a class with few groups, such as the 31 source documents of UCSD COVID, is in every split.

    Args:
        records (list[dict]): records with a ``group`` field (and ``class_id`` to stratify).
        val_fraction (float): fraction of the groups in val.
        test_fraction (float): fraction of the groups in test.
        seed (int): seed of the shuffles.
        stratify (bool): split the groups of each class separately.

    Returns:
        dict[str, list[dict]]: ``{"train", "val", "test"}`` -> records, in input order.
    """
    strata = {}
    for record in records:
        key = record.get("class_id", 0) if stratify else 0
        strata[record["group"]] = min(key, strata.get(record["group"], key))
    test, val = set(), set()
    for stratum in sorted(set(strata.values())):
        groups = sorted(g for g, s in strata.items() if s == stratum)
        stratum_test, stratum_val = _split_groups(groups, val_fraction, test_fraction, seed)
        test |= stratum_test
        val |= stratum_val
    splits = {"train": [], "val": [], "test": []}
    for record in records:
        group = record["group"]
        splits["test" if group in test else "val" if group in val else "train"].append(record)
    return splits


def _split_groups(groups, val_fraction, test_fraction, seed):
    test = split_by_group(groups, test_fraction, seed)
    rest = [g for g in groups if g not in test]
    num_val = int(np.ceil(len(groups) * val_fraction)) if val_fraction > 0 else 0
    if not num_val or len(rest) < 2:
        return test, set()
    # split_by_group rounds up; asking for (n - 0.5) / len(rest) lands on n exactly, while
    # n / len(rest) can round up to n + 1 through float error.
    return test, split_by_group(rest, (num_val - 0.5) / len(rest), seed + 1)
