"""The competition metric, defined once.

Macro F1 is scikit-learn's over all 18 labels (``labels=range(18)``): a class absent from both
the truth and the predictions scores 0 and still counts in the mean. torchmetrics would skip such
a class; the leaderboard's definition is not published, so maskpipe takes the stricter reading.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.metrics import f1_score

from maskpipe import classes

F1_DEFINITION = ("macro F1 over all 18 classes (scikit-learn, labels=0..17); a class absent "
                 "from both truth and predictions counts as 0")


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int = classes.NUM_CLASSES) -> float:
    """Macro F1 over ``n_classes`` labels, absent classes counted as 0."""
    return float(f1_score(y_true, y_pred, labels=list(range(n_classes)), average="macro",
                          zero_division=0))


def per_class_f1(y_true: np.ndarray, y_pred: np.ndarray) -> list[float]:
    """F1 of each of the 18 classes."""
    scores = f1_score(y_true, y_pred, labels=list(range(classes.NUM_CLASSES)), average=None,
                      zero_division=0)
    return [float(s) for s in scores]


def head_score(head: str, official: np.ndarray, pred: np.ndarray) -> tuple[float, float, dict[str, float]]:
    """(macro F1, accuracy, per-task F1) of predictions against official 18-class labels.

    ``head`` is ``single``/``multitask`` (``pred`` holds 18-class indices) or a task name (``pred``
    holds that task's indices, scored against the task part of the official label).
    """
    if head in classes.TASKS:
        truth = classes.decode(official)[list(classes.TASKS).index(head)]
        f1 = macro_f1(truth, pred, classes.TASKS[head])
        return f1, float((pred == truth).mean()), {head: f1}
    return macro_f1(official, pred), float((pred == official).mean()), task_f1(official, pred)


def task_f1(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Macro F1 of each task (mask 3, gender 2, age 3) from 18-class labels."""
    t, p = classes.decode(y_true), classes.decode(y_pred)
    return {name: macro_f1(tt, pp, n) for (name, n), tt, pp in zip(classes.TASKS.items(), t, p, strict=True)}


def _fast_macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int = classes.NUM_CLASSES) -> float:
    """:func:`macro_f1` from one confusion matrix (np.bincount): the same value (a test checks),
    ~100x faster than scikit-learn's per call, which a bootstrap calls thousands of times."""
    cm = np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    tp = np.diag(cm).astype(float)
    denom = cm.sum(0) + cm.sum(1)  # 2TP + FP + FN
    return float(np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0).mean())


def person_interval(y_true: np.ndarray, y_pred: np.ndarray, persons: np.ndarray,
                    baseline: np.ndarray | None = None, *, confidence: float = 0.95,
                    n_resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Bootstrap interval of macro F1 over persons, or of its gain over ``baseline`` (paired).

    A person's photos share one face and one label, so they are not independent draws: the
    persons are resampled with replacement (each drawn person brings all its photos), as a new
    eval set of that many persons would be. With ``baseline`` (another prediction of the same
    photos), each resample scores both on the same persons, so the interval is of the paired
    difference ``F1(y_pred) - F1(baseline)``: a gain is real where it excludes 0.
    scipy's bootstrap resamples units, here a person's index; BCa, because a resample's macro F1
    is biased low (a resample holds fewer distinct persons, so rare classes score worse).

    Args:
        y_true, y_pred: 18-class labels of each photo; ``persons`` the person of each photo.
        baseline: a second prediction of the same photos, for a paired difference.
        confidence: the interval's coverage.
        n_resamples, seed: the bootstrap's size and seed (the same seed pairs rows' intervals).

    Returns:
        (low, high).
    """
    from scipy.stats import DegenerateDataWarning, bootstrap

    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    base = None if baseline is None else np.asarray(baseline, dtype=np.int64)
    codes, inverse = np.unique(np.asarray(persons), return_inverse=True)
    rows = [np.flatnonzero(inverse == i) for i in range(len(codes))]

    def stat(drawn: np.ndarray) -> float:
        idx = np.concatenate([rows[int(i)] for i in drawn])
        score = _fast_macro_f1(y_true[idx], y_pred[idx])
        return score - _fast_macro_f1(y_true[idx], base[idx]) if base is not None else score

    if base is not None and np.array_equal(y_pred, base):
        return 0.0, 0.0  # no photo differs: every resample's difference is 0
    for method in ("BCa", "percentile"):  # BCa is undefined where the jackknife is flat (tiny sets)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DegenerateDataWarning)
            res = bootstrap((np.arange(len(codes)),), stat, vectorized=False, n_resamples=n_resamples,
                            confidence_level=confidence, method=method, rng=np.random.default_rng(seed))
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if not (np.isnan(low) or np.isnan(high)):
            break
    return low, high
