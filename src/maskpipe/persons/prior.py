"""Class priors re-estimated on the eval set (Saerens, Latinne and Decaestecker, 2002).

Neither scikit-learn nor scipy has this EM (QuaPy's ``EMQ`` does, but it is not a dependency and
the method is a dozen lines): with p(y|x) from a model trained under priors ``pi_train``, the eval
priors ``pi`` are the fixed point of  pi <- mean over photos of  p(y|x) pi/pi_train (renormalised
per photo), and the renormalised terms are the eval-adjusted probabilities.
"""

from __future__ import annotations

import numpy as np

from maskpipe.classes import NUM_CLASSES, TASKS, decode


def em_priors(probs: np.ndarray, train_priors: np.ndarray, tol: float = 1e-8,
              max_iter: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Eval priors and the adjusted probabilities (both by EM) of an n x k probability matrix."""
    probs = np.asarray(probs, np.float64)
    base = np.clip(np.asarray(train_priors, np.float64), 1e-12, None)
    prior, adjusted = base.copy(), probs
    for _ in range(max_iter):
        adjusted = probs * (prior / base)
        adjusted /= np.clip(adjusted.sum(1, keepdims=True), 1e-300, None)
        new = adjusted.mean(0)
        done = np.abs(new - prior).max() < tol
        prior = new
        if done:
            break
    return prior, adjusted


def task_marginals(probs18: np.ndarray) -> dict[str, np.ndarray]:
    """Each task's probabilities (mask n x 3, gender n x 2, age n x 3) from 18-class ones."""
    p = np.asarray(probs18, np.float64).reshape(-1, 3, 2, 3)
    return {"mask": p.sum((2, 3)), "gender": p.sum((1, 3)), "age": p.sum((1, 2))}


def reweight(probs18: np.ndarray, factors: dict[str, np.ndarray]) -> np.ndarray:
    """18-class probabilities times a per-task factor of each class's task value, renormalised.

    ``factors[task]`` is k (the same for every photo) or n x k; tasks left out keep factor 1.
    """
    mask, gender, age = decode(np.arange(NUM_CLASSES))
    out = np.asarray(probs18, np.float64).copy()
    for task, codes in (("mask", mask), ("gender", gender), ("age", age)):
        if task in factors:
            f = np.asarray(factors[task], np.float64)
            out *= f[..., codes]
    return out / np.clip(out.sum(1, keepdims=True), 1e-300, None)


def train_priors(labels: np.ndarray) -> dict[str, np.ndarray]:
    """Each task's class shares among training labels (18-class indices)."""
    parts = dict(zip(TASKS, decode(np.asarray(labels)), strict=True))
    return {t: np.bincount(parts[t], minlength=k) / max(len(labels), 1) for t, k in TASKS.items()}


def shift_priors(probs18: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, dict]:
    """Adjust eval probabilities to each task's eval priors, estimated by EM per task.

    Returns the adjusted 18-class probabilities and, per task, the train and estimated eval priors.
    """
    base = train_priors(labels)
    marg = task_marginals(probs18)
    factors, info = {}, {}
    for task in TASKS:
        prior, _ = em_priors(marg[task], base[task])
        factors[task] = prior / np.clip(base[task], 1e-12, None)
        info[task] = {"train": [round(float(v), 4) for v in base[task]],
                      "eval": [round(float(v), 4) for v in prior]}
    return reweight(probs18, factors), info
