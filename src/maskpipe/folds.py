"""The ``folds`` step: person-grouped, class-stratified K folds.

All seven photos of a person share one fold; splitting by image leaks a person's face into
validation and inflates the score (teams saw 90% locally and 75% on the leaderboard).
"""

from __future__ import annotations

import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from maskpipe import classes
from maskpipe.io import MaskpipeError


def assign_folds(labels: pd.DataFrame, k: int, seed: int) -> pd.DataFrame:
    """One row per person: its fold (0..k-1) and the stratum it was balanced on.

    Strata are the person-level classes gender x age group; scikit-learn's StratifiedGroupKFold
    (>= 1.8: its shuffle was wrong before) keeps each person in one fold.

    Raises:
        MaskpipeError: fewer persons than folds, or (a bug guard) a person in two folds.
    """
    persons = labels.drop_duplicates("person")
    if len(persons) < k:
        raise MaskpipeError(f"folds.k = {k} but the labels hold only {len(persons)} persons")
    gender = labels["gender"].map(classes.GENDER_BY_NAME).to_numpy()
    stratum = gender * 3 + labels["age_group"].to_numpy()
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    fold_of: dict[str, int] = {}
    for fold, (_, val) in enumerate(splitter.split(labels, stratum, groups=labels["person"])):
        for person in labels["person"].iloc[val].unique():
            if fold_of.setdefault(person, fold) != fold:
                raise MaskpipeError(f"person {person!r} landed in folds {fold_of[person]} and {fold}")
    out = pd.DataFrame({"person": list(fold_of), "fold": list(fold_of.values())})
    strata = labels.drop_duplicates("person").set_index("person")
    out["stratum"] = (strata.loc[out["person"], "gender"].map(classes.GENDER_BY_NAME).to_numpy() * 3
                      + strata.loc[out["person"], "age_group"].to_numpy())
    return out.sort_values("person").reset_index(drop=True)
