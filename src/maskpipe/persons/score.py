"""Groups scored against known persons: pairwise precision, recall, F1 and persons found whole."""

from __future__ import annotations

import numpy as np


def score_groups(groups: np.ndarray, persons: np.ndarray) -> dict[str, float]:
    """Pairwise scores of a grouping against the true persons of the same photos.

    A pair of photos is predicted together when both have the same group, and truly together when
    both are one person (scikit-learn's pair confusion matrix counts the pairs). ``whole`` is the
    share of persons whose photos are exactly one group (nothing missing, nothing added).
    """
    from sklearn.metrics.cluster import pair_confusion_matrix

    groups, persons = np.asarray(groups), np.asarray(persons)
    if groups.shape != persons.shape:
        raise ValueError(f"score_groups: {len(groups)} groups for {len(persons)} persons")
    (_, fp), (fn, tp) = pair_confusion_matrix(persons, groups)  # ordered pairs, counted twice
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    whole = 0
    for p in np.unique(persons):
        g = np.unique(groups[persons == p])
        whole += len(g) == 1 and int((groups == g[0]).sum()) == int((persons == p).sum())
    n_persons = len(np.unique(persons))
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1),
            "whole": whole / n_persons if n_persons else 1.0, "persons": n_persons,
            "groups": int(len(np.unique(groups)))}
