"""Choices fitted on out-of-fold predictions: vote weights and an age-group bias.

Both are fitted on half of the persons and reported on the other half: fitting and scoring on
the same out-of-fold set would report its own overfit as a gain. The halves split persons, not
photos, for the same reason the folds do.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from sklearn.model_selection import GroupShuffleSplit

from maskpipe.classes import NUM_CLASSES, decode
from maskpipe.metrics import macro_f1

#: Classes whose age group is ">=60": the bias scales their probabilities.
OLD = decode(np.arange(NUM_CLASSES))[2] == 2


def person_halves(persons: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (fit, holdout) over rows: scikit-learn's GroupShuffleSplit by person."""
    splitter = GroupShuffleSplit(n_splits=1, test_size=0.5, random_state=seed)
    fit_rows, _ = next(splitter.split(persons, groups=persons))
    fit = np.zeros(len(persons), dtype=bool)
    fit[fit_rows] = True
    return fit, ~fit


def _softmax(theta: np.ndarray) -> np.ndarray:
    e = np.exp(theta - theta.max())
    return e / e.sum()


def search_weights(member_probs: list[np.ndarray], y: np.ndarray, rows: np.ndarray, vote) -> np.ndarray:
    """Vote weights (summing to 1) that maximise macro F1 on ``rows``.

    scipy's Nelder-Mead on log-weights. Macro F1 is piecewise constant in the weights, so the
    search starts from a simplex with steps of 1 in log-weight (scipy's default steps of 5% would
    never leave the first plateau). Deterministic: no random start.
    """
    k = len(member_probs)
    if k == 1:
        return np.ones(1)

    def loss(theta: np.ndarray) -> float:
        p = vote([m[rows] for m in member_probs], _softmax(theta))
        return -macro_f1(y[rows], p.argmax(1))

    simplex = np.vstack([np.zeros(k), np.eye(k)])
    result = minimize(loss, np.zeros(k), method="Nelder-Mead",
                      options={"initial_simplex": simplex, "maxiter": 100 * k, "xatol": 1e-2})
    best = result.x if result.fun < loss(np.zeros(k)) else np.zeros(k)  # never worse than equal
    return _softmax(best)


def apply_age_bias(p18: np.ndarray, bias: float) -> np.ndarray:
    """Scale the probabilities of the >=60 classes by exp(bias) and renormalise."""
    out = p18.copy()
    out[:, OLD] *= np.exp(bias)
    return out / out.sum(axis=1, keepdims=True)


def fit_age_bias(p18: np.ndarray, y: np.ndarray, rows: np.ndarray,
                 grid: np.ndarray = np.linspace(-3, 3, 61)) -> float:
    """The bias of the grid with the best macro F1 on ``rows`` (the smallest |bias| on ties)."""
    scores = [(macro_f1(y[rows], apply_age_bias(p18[rows], b).argmax(1)), -abs(b), b) for b in grid]
    return float(max(scores)[2])
