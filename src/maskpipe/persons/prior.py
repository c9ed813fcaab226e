"""Class priors re-estimated on the eval set (Saerens, Latinne and Decaestecker, 2002).

Neither scikit-learn nor scipy has this EM (QuaPy's ``EMQ`` does, but it is not a dependency and
the method is a dozen lines): with p(y|x) from a model trained under priors ``pi_train``, the eval
priors ``pi`` are the fixed point of  pi <- mean over photos of  p(y|x) pi/pi_train (renormalised
per photo), and the renormalised terms are the eval-adjusted probabilities.

The EM assumes calibrated probabilities; on overconfident ones it runs to degenerate priors (all
eval photos one gender), as Alexandari et al. (2020) found. So the probabilities are first
temperature-scaled on the out-of-fold predictions (the calibration the paper recommends; scikit-
learn's temperature calibration wraps an estimator, not a table of probabilities). The mask task
is left alone: every person, in train and eval, has 5/1/1 photos, so its prior cannot shift.

Temperature scaling is not always enough (a weak model's age probabilities still ran EM to
">=60 for everyone"). So the same EM is first run on the out-of-fold probabilities, whose
priors are known to be the train priors: a task is shifted only where that self-check lands
within ``tolerance`` of them.
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


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T minimising the log loss of softmax(log p / T) on labelled probabilities."""
    from scipy.optimize import minimize_scalar

    logp = np.log(np.clip(np.asarray(probs, np.float64), 1e-12, None))
    rows = np.arange(len(logp))

    def nll(t: float) -> float:
        z = logp / t
        z -= z.max(1, keepdims=True)
        return float(-(z[rows, labels] - np.log(np.exp(z).sum(1))).mean())

    return float(minimize_scalar(nll, bounds=(0.05, 20.0), method="bounded").x)


def scale(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities at a temperature: softmax(log p / T)."""
    z = np.log(np.clip(np.asarray(probs, np.float64), 1e-12, None)) / temperature
    z = np.exp(z - z.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


#: Tasks whose eval priors are estimated (mask: fixed at 5/1/1 per person by design).
SHIFTED_TASKS = ("gender", "age")


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


def shift_priors(probs18: np.ndarray, labels: np.ndarray, temperature: float = 1.0,
                 tasks: tuple[str, ...] = SHIFTED_TASKS, oof: np.ndarray | None = None,
                 tolerance: float = 0.05) -> tuple[np.ndarray, dict]:
    """Adjust eval probabilities to each task's eval priors, estimated by EM per task on the
    probabilities at ``temperature`` (fitted with :func:`fit_temperature` on out-of-fold ones).

    ``oof``: out-of-fold probabilities in ``labels`` order for the self-check (module docstring);
    without them every task is shifted. Returns the adjusted (and temperature-scaled) 18-class
    probabilities and, per task, the train priors, the estimated eval priors, the self-check's
    estimate (``oof``) and whether the task was shifted (``applied``).
    """
    base = train_priors(labels)
    original, probs18 = probs18, scale(probs18, temperature)
    marg = task_marginals(probs18)
    factors, info = {}, {}
    check = None if oof is None else task_marginals(scale(oof, temperature))
    for task in tasks:
        prior, _ = em_priors(marg[task], base[task])
        info[task] = {"train": [round(float(v), 4) for v in base[task]],
                      "eval": [round(float(v), 4) for v in prior], "applied": True}
        if check is not None:
            own, _ = em_priors(check[task], base[task])
            info[task].update(oof=[round(float(v), 4) for v in own],
                              applied=bool(np.abs(own - base[task]).max() <= tolerance))
        if info[task]["applied"]:
            factors[task] = prior / np.clip(base[task], 1e-12, None)
    if not factors:  # every task failed its self-check: the probabilities stay as they were
        return np.asarray(original, np.float64), info
    return reweight(probs18, factors), info
