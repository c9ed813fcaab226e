"""Person-consistent eval predictions: a clean group's pooled gender and age, 5/1/1 mask states.

Applied to the ensemble's final 18-class eval probabilities. A group is *clean* when it has
exactly ``size`` photos and every photo's grouping confidence reaches ``min_confidence``; every
other photo keeps its own prediction. Changes are made by reweighting each photo's 18-class
probabilities per task (:func:`maskpipe.persons.prior.reweight`), so the correlations between
tasks in a photo's prediction are kept.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from maskpipe.classes import TASKS, decode
from maskpipe.io import MaskpipeError
from maskpipe.persons.prior import reweight, task_marginals

#: Mask states of a person's seven photos: 5 worn, 1 worn wrongly, 1 without.
PATTERN = (0, 0, 0, 0, 0, 1, 2)
_EPS = 1e-9


def pooled(probs: np.ndarray) -> np.ndarray:
    """One distribution from a group's rows: the normalised mean of their log-probabilities
    (a geometric mean: each photo's evidence multiplies, none dominates by confidence alone)."""
    logp = np.log(np.clip(probs, _EPS, None)).mean(0)
    p = np.exp(logp - logp.max())
    return p / p.sum()


def assign_masks(mask_probs: np.ndarray, pattern: tuple[int, ...] = PATTERN) -> np.ndarray:
    """Mask state of each photo of one person, the pattern's states used exactly once each, that
    maximises the product of the photos' probabilities of their states."""
    from scipy.optimize import linear_sum_assignment

    if len(mask_probs) != len(pattern):
        raise ValueError(f"assign_masks: {len(mask_probs)} photos for a pattern of {len(pattern)}")
    cost = -np.log(np.clip(mask_probs[:, list(pattern)], _EPS, None))
    rows, cols = linear_sum_assignment(cost)
    out = np.empty(len(pattern), dtype=np.int64)
    out[rows] = np.asarray(pattern)[cols]
    return out


def clean_groups(groups: pd.DataFrame, size: int, min_confidence: float) -> list[np.ndarray]:
    """Row numbers (in ``groups`` order) of each clean group."""
    out = []
    for _, rows in groups.groupby("group", sort=True).indices.items():
        if len(rows) == size and (groups["confidence"].to_numpy()[rows] >= min_confidence).all():
            out.append(np.asarray(rows))
    return out


def changes(before: np.ndarray, after: np.ndarray) -> dict[str, int]:
    """How many predictions (18-class, and per task) differ between two argmax arrays."""
    b, a = decode(before), decode(after)
    return {"changed": int((before != after).sum()),
            **{f"changed_{t}": int((x != y).sum()) for t, x, y in zip(TASKS, b, a, strict=True)}}


def apply_persons(probs18: np.ndarray, keys: pd.Index, groups: pd.DataFrame, pool: bool,
                  masks: bool, min_confidence: float = 0.0) -> tuple[np.ndarray, dict]:
    """Eval probabilities made consistent within clean groups, and what changed.

    ``groups``: the persons step's table (``key, group, size, confidence``) covering ``keys``.
    """
    if set(groups["key"]) != set(keys):
        raise MaskpipeError("ensemble: the persons groups and the test probabilities cover "
                            "different eval photos; rerun the persons step")
    groups = groups.set_index("key").loc[keys].reset_index()
    clean = clean_groups(groups, len(PATTERN), min_confidence)
    out = np.asarray(probs18, np.float64).copy()
    marg = task_marginals(out)
    factors = {t: np.ones_like(m) for t, m in marg.items()}
    for rows in clean:
        if pool:
            for task in ("gender", "age"):
                factors[task][rows] = pooled(marg[task][rows]) / np.clip(marg[task][rows], _EPS, None)
        if masks:
            states = assign_masks(marg["mask"][rows])
            factors["mask"][rows] = np.eye(3)[states] / np.clip(marg["mask"][rows], _EPS, None)
    if clean:
        out = reweight(out, factors)
    before, after = np.asarray(probs18).argmax(1), out.argmax(1)
    sizes = Counter(int(n) for n in groups.groupby("group").size())
    info = {"groups": int(groups["group"].nunique()), "sizes": {str(k): v for k, v in sorted(sizes.items())},
            "clean_groups": len(clean), "photos_in_clean_groups": int(sum(len(r) for r in clean)),
            "pool": pool, "assign_masks": masks, "min_confidence": min_confidence, **changes(before, after)}
    return out, info
