"""The teacher's vote in the ensemble: its gender and age estimates (the ``teacher`` step's) as
one more voter on those two factors of the 18-class probabilities, with a weight fitted on
out-of-fold predictions.

The teacher knows nothing of masks, so its vote keeps the ensemble's own mask distribution:
its 18-class probabilities are the product of the ensemble's P(mask) and the teacher's P(gender)
and P(age). The two then vote with weights ``1 - w`` and ``w``, ``w`` fitted like the members'
weights (:func:`maskpipe.ensemble.fitting.search_weights`, on the same half of the persons) and
kept only where it beats ``w = 0`` there. A photo without an estimate keeps the ensemble's
probabilities exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from maskpipe.classes import TASK_COLUMNS, joint, marginals
from maskpipe.ensemble import fitting
from maskpipe.io import MaskpipeError, read_csv
from maskpipe.metrics import macro_f1

#: ``vote(probabilities, weights)``: the ensemble's vote (its method fixed).
Vote = Callable[[list[np.ndarray], np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Estimates:
    """The teacher's P(gender) and P(age group) per row, and which rows have them."""

    gender: np.ndarray
    age: np.ndarray
    has: np.ndarray

    def rows(self, mask: np.ndarray) -> Estimates:
        """These estimates on the rows ``mask`` selects."""
        return Estimates(self.gender[mask], self.age[mask], self.has[mask])


def read_estimates(path: Path, keys: pd.Index) -> Estimates:
    """The estimates of ``keys`` (photo keys, in the order wanted) from a teacher table.

    Raises:
        MaskpipeError: the file lacks a column or a key, or an estimate is not a distribution.
    """
    gender_cols, age_cols = TASK_COLUMNS["gender"], TASK_COLUMNS["age"]
    table = read_csv(path, required=["key", *gender_cols, *age_cols], dtype={"key": str}).set_index("key")
    missing = keys[~keys.isin(table.index)]
    if len(missing):
        raise MaskpipeError(f"{path}: no row for photo {missing[0]!r}; rerun the teacher step")
    table = table.loc[keys]
    gender, age = table[gender_cols].to_numpy(np.float64), table[age_cols].to_numpy(np.float64)
    has = ~(np.isnan(gender).any(1) | np.isnan(age).any(1))
    for name, p in (("gender", gender), ("age", age)):
        bad = has & ((p < 0).any(1) | (np.abs(p.sum(1) - 1) > 1e-3))
        if bad.any():
            raise MaskpipeError(f"{path}: row {keys[np.argmax(bad)]!r}: the {name} probabilities "
                                "are not a distribution")
    return Estimates(np.where(has[:, None], gender, 0.0), np.where(has[:, None], age, 0.0), has)


def teacher_probs(p18: np.ndarray, found: Estimates) -> np.ndarray:
    """The teacher's 18-class vote: ``p18``'s mask distribution times the teacher's gender and
    age; ``p18`` itself on rows without an estimate."""
    q = joint({"mask": marginals(p18)["mask"], "gender": found.gender, "age": found.age})
    return np.where(found.has[:, None], q, p18)


def with_teacher(p18: np.ndarray, found: Estimates, weight: float, vote: Vote) -> np.ndarray:
    """``p18`` and the teacher's vote combined with weights ``1 - weight`` and ``weight``; rows
    without an estimate are ``p18``'s, bit for bit (a vote of two equal rows may round)."""
    if weight == 0:
        return p18
    mixed = vote([p18, teacher_probs(p18, found)], np.array([1.0 - weight, weight]))
    return np.where(found.has[:, None], mixed, p18)


def fit_teacher_weight(p18: np.ndarray, found: Estimates, y: np.ndarray, rows: np.ndarray,
                       vote: Vote) -> float:
    """The teacher's weight in 0..1 with the best macro F1 on ``rows``: the members' weight
    search over (ensemble, teacher), kept only where it beats no teacher (0) there."""
    found_w = fitting.search_weights([p18, teacher_probs(p18, found)], y, rows, vote)
    weight = float(found_w[1])

    def f1(w: float) -> float:
        return macro_f1(y[rows], with_teacher(p18[rows], found.rows(rows), w, vote).argmax(1))

    return weight if f1(weight) > f1(0.0) else 0.0
