"""The ``folds`` step: person-grouped, class-stratified K folds.

All seven photos of a person share one fold; splitting by image leaks a person's face into
validation and inflates the score (teams saw 90% locally and 75% on the leaderboard).
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from maskpipe.io import MaskpipeError

log = logging.getLogger(__name__)


def assign_folds(labels: pd.DataFrame, k: int, seed: int) -> pd.DataFrame:
    """One row per person: its fold (0..k-1) and its person class (gender * 3 + age group).

    Strata are the person-level classes: gender x official age group x training age group (they
    differ only where ``labels.train_age_bounds`` moves a boundary, e.g. ages 58-59 with "old"
    from 58). scikit-learn's StratifiedGroupKFold (>= 1.8: its shuffle was wrong before) keeps
    each person in one fold.

    Raises:
        MaskpipeError: fewer persons than folds, or (a bug guard) a person in two folds.
    """
    persons = labels.drop_duplicates("person")
    if len(persons) < k:
        raise MaskpipeError(f"folds.k = {k} but the labels hold only {len(persons)} persons")
    stratum = _strata(labels)
    _warn_small_strata(labels["person"], stratum, k)
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    fold_of: dict[str, int] = {}
    with warnings.catch_warnings():
        # sklearn's version counts images, not persons; _warn_small_strata said it in persons.
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        splits = list(splitter.split(labels, stratum, groups=labels["person"]))
    for fold, (_, val) in enumerate(splits):
        for person in labels["person"].iloc[val].unique():
            if fold_of.setdefault(person, fold) != fold:
                raise MaskpipeError(f"person {person!r} landed in folds {fold_of[person]} and {fold}")
    out = pd.DataFrame({"person": list(fold_of), "fold": list(fold_of.values())})
    persons = labels.drop_duplicates("person").set_index("person").loc[out["person"]]
    # The reported stratum is the official person class (gender * 3 + age group, 0..5).
    out["stratum"] = (persons["gender_id"] * 3 + persons["age_group"]).to_numpy()
    return out.sort_values("person").reset_index(drop=True)


def _warn_small_strata(persons: pd.Series, stratum: np.ndarray, k: int) -> None:
    """A stratum with fewer persons than folds cannot reach every fold: say so, in persons.

    A warning, not an error: shifted age bounds make strata of a handful of persons (ages 58-59
    with "old" from 58) on the real data, and those folds are still valid, only less balanced.
    Each stratum is named by one of its persons, whose folder name says gender and age.
    """
    first = pd.Series(stratum).groupby(persons.to_numpy()).first()
    counts = first.value_counts()
    small = counts[counts < k].sort_values()
    if len(small):
        names = ", ".join(f"{n} like {first.index[first == s][0]}" for s, n in small.items())
        log.warning("folds.k = %d but %d stratum(s) hold fewer persons than folds (%s); "
                    "some folds get none of them", k, len(small), names)


def _strata(labels: pd.DataFrame) -> np.ndarray:
    """Person-level stratum per image: gender * 3 + age group, then 6 + k for the few persons
    whose training age group differs from the official one (k numbers those combinations)."""
    base = labels["gender_id"].to_numpy() * 3 + labels["age_group"].to_numpy()
    shifted = labels["train_age_group"].to_numpy() != labels["age_group"].to_numpy()
    extra = labels["gender_id"].to_numpy() * 3 + labels["train_age_group"].to_numpy()
    return np.where(shifted, 6 + extra, base)
