"""Rank suspected label errors from out-of-fold probabilities with cleanlab, per task.

The ensemble's 18-class OOF probabilities are split into their task marginals (mask 3, gender 2,
age 3; ``class = mask * 6 + gender * 3 + age``). Each label gets cleanlab's label quality score
(``cleanlab.rank.get_label_quality_scores``; lower = more likely wrong) and cleanlab's
confident-learning flag (``cleanlab.filter.find_label_issues``). The unit is the one a label
belongs to:

- gender and age are a person's: the person's photos' marginals are averaged, and the person is
  scored once (7 photos of evidence instead of one);
- mask status is a photo's. An incorrect_mask/normal swap, the real data's common mix-up, shows as
  two photos that each look like the other's label. The pair is scored as one two-way label (as
  named / swapped) whose probabilities multiply both photos' readings, and a person gets a
  ``swap`` suspect when the exchanged assignment is likelier; any other photo the models read as
  another mask status is a ``mask`` suspect.

Only labels whose suggested value (the argmax of the aggregated probabilities) differs from the
given one are listed: those are the ones a fix can change. All tasks share one ranking by score,
which is comparable across tasks for the default ``normalized_margin`` (p(given) minus the best
other class, mapped to 0..1: below 0.5 means another class is likelier, whatever the class count).
"""

from __future__ import annotations

import contextlib
import logging
import warnings

import numpy as np
import pandas as pd
from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores

from maskpipe import classes
from maskpipe.mislabels import SUSPECT_COLUMNS

log = logging.getLogger(__name__)

#: Label quality scores of ``cleanlab.rank.get_label_quality_scores``.
METHODS = ("normalized_margin", "self_confidence", "confidence_weighted_entropy")
_SWAPPED = {classes.MASK_BY_STEM["incorrect_mask"]: "normal", classes.MASK_BY_STEM["normal"]: "incorrect_mask"}


def task_probs(probs: np.ndarray) -> dict[str, np.ndarray]:
    """Per-task probabilities (mask N x 3, gender N x 2, age N x 3) from 18-class ones.

    The marginals are renormalised: the OOF table stores probabilities rounded to 6 decimals.
    """
    out = classes.marginals(np.asarray(probs, dtype=np.float64))
    return {task: m / m.sum(axis=1, keepdims=True) for task, m in out.items()}


@contextlib.contextmanager
def _quiet():
    """cleanlab warns "too few examples to flag all issues of class k" on small data; the scores
    are still right."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


def _cleanlab(labels: np.ndarray, probs: np.ndarray, method: str) -> tuple[np.ndarray, np.ndarray]:
    """(quality score, confident-learning flag) of each label."""
    with _quiet():
        quality = get_label_quality_scores(labels, probs, method=method)
        try:
            flagged = find_label_issues(labels, probs, n_jobs=1)  # a pool costs more than 2-3 classes
        except ValueError as e:  # e.g. a single class: confident learning has nothing to compare
            log.debug("cleanlab find_label_issues skipped: %s", e)
            flagged = np.zeros(len(labels), dtype=bool)
    return np.asarray(quality, dtype=np.float64), np.asarray(flagged, dtype=bool)


def nearest_age(age: int, group: int) -> int:
    """The age closest to ``age`` inside official age group ``group``: the smallest fix."""
    young, old = classes.OFFICIAL_AGE_BOUNDS
    return [min(age, young - 1), int(np.clip(age, young, old - 1)), max(age, old)][group]


def _person_rows(table: pd.DataFrame, probs: np.ndarray, task: str, method: str) -> list[dict]:
    """Suspects of a person-level task: the mean of a person's photo probabilities, scored once.

    The mean, not the product: one photo the models misread with confidence would dominate a
    product. On a planted demo run (72 persons, 11 errors) the mean found 11 of 11 in the first 22
    suspects and the product 9.
    """
    names = classes.GENDER_NAMES if task == "gender" else classes.AGE_NAMES
    column = "gender_id" if task == "gender" else "age_group"
    codes, persons = pd.factorize(table["person"], sort=True)
    mean = np.zeros((len(persons), probs.shape[1]))
    np.add.at(mean, codes, probs)
    mean /= np.bincount(codes)[:, None]
    first = table.groupby(codes, sort=True).first()
    given = first[column].to_numpy(dtype=int)
    quality, flagged = _cleanlab(given, mean, method)
    suggested = mean.argmax(axis=1)
    rows = []
    for i in np.flatnonzero(suggested != given):
        s = int(suggested[i])
        if task == "gender":
            given_text, fix = names[given[i]], names[s]
        else:
            age = int(first["age"].iloc[i])
            given_text, fix = f"{names[given[i]]} (age {age})", nearest_age(age, s)
        rows.append({"person": persons[i], "task": task, "image": "", "given": given_text,
                     "suggested": names[s], "score": quality[i], "p_suggested": mean[i, s],
                     "flagged": bool(flagged[i]), "fix_kind": task, "fix_value": str(fix)})
    return rows


def _mask_rows(table: pd.DataFrame, probs: np.ndarray, method: str) -> list[dict]:
    """Swapped incorrect_mask/normal pairs per person, then single photos read as another status."""
    given = table["mask"].to_numpy(dtype=int)
    quality, flagged = _cleanlab(given, probs, method)
    suggested = probs.argmax(axis=1)
    rows, explained = [], set()
    inc, nor = classes.MASK_BY_STEM["incorrect_mask"], classes.MASK_BY_STEM["normal"]
    pairs = []  # (person, incorrect_mask row, normal row)
    for person, idx in table.groupby("person", sort=True).indices.items():
        by_stem = dict(zip(table["stem"].to_numpy()[idx], idx, strict=True))
        if "incorrect_mask" not in by_stem or "normal" not in by_stem:
            continue  # a dropped photo: no pair to swap
        i, n = by_stem["incorrect_mask"], by_stem["normal"]
        if given[i] == inc and given[n] == nor:  # else already swapped by a correction, or relabelled
            pairs.append((person, i, n))
    if pairs:
        # The pair as one two-way label, "as named" (0) or "swapped" (1), with the probability of
        # each assignment from both photos (independent views): evidence adds up, where the
        # photos' own scores would each count one uncertain incorrect/normal reading. On the
        # planted run above this found every swap in the first 22; the mean of the two photos'
        # qualities missed one.
        i, n = np.array([p[1] for p in pairs]), np.array([p[2] for p in pairs])
        both = np.stack([probs[i, inc] * probs[n, nor], probs[i, nor] * probs[n, inc]], axis=1)
        both /= np.clip(both.sum(axis=1, keepdims=True), 1e-12, None)
        with _quiet():
            pair_quality = get_label_quality_scores(np.zeros(len(pairs), dtype=int), both, method=method)
        for k in np.flatnonzero(both[:, 1] > both[:, 0]):
            person, a, b = pairs[k]
            explained |= {a, b}
            rows.append({"person": person, "task": "swap", "image": "incorrect_mask+normal",
                         "given": "as named", "suggested": "swapped", "score": float(pair_quality[k]),
                         "p_suggested": float(both[k, 1]), "flagged": bool(flagged[a] and flagged[b]),
                         "fix_kind": "swap_incorrect_normal", "fix_value": "true"})
    for i in np.flatnonzero(suggested != given):
        if i in explained:
            continue
        stem = table["stem"].iloc[i]
        rows.append({"person": table["person"].iloc[i], "task": "mask", "image": stem,
                     "given": classes.MASK_NAMES[given[i]], "suggested": classes.MASK_NAMES[suggested[i]],
                     "score": quality[i], "p_suggested": probs[i, suggested[i]],
                     "flagged": bool(flagged[i]),
                     # No fix relabels one photo; dropping it keeps a wrong label out of training.
                     "fix_kind": "drop_image", "fix_value": stem})
    return rows


def rank_suspects(table: pd.DataFrame, probs: np.ndarray, method: str = "normalized_margin") -> pd.DataFrame:
    """Every label the out-of-fold probabilities disagree with, most suspect first.

    Args:
        table: one row per photo: ``person, stem, mask, gender_id, age_group, age`` (official
            labels, as the ``labels`` step writes them).
        probs: the photos' 18-class out-of-fold probabilities, N x 18, rows as in ``table``.
        method: the cleanlab label quality score, one of :data:`METHODS`.

    Returns:
        :data:`SUSPECT_COLUMNS`: ``rank`` 1 is the most suspect; ``suspect`` names the row for
        ``maskpipe mislabels --accept`` (``PERSON:TASK``, ``PERSON:mask:STEM`` for a photo);
        ``score`` is cleanlab's quality (lower = more suspect); ``p_suggested`` the aggregated
        probability of the suggested label; ``flagged`` cleanlab's confident-learning verdict;
        ``fix_kind``/``fix_value`` the correction accepting the row adds; ``accept`` is empty,
        for the user to mark.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    table = table.reset_index(drop=True)
    tp = task_probs(probs)
    rows = (_person_rows(table, tp["gender"], "gender", method) + _person_rows(table, tp["age"], "age", method)
            + _mask_rows(table, tp["mask"], method))
    out = pd.DataFrame(rows, columns=[c for c in SUSPECT_COLUMNS if c not in ("rank", "suspect", "accept")])
    out = out.sort_values(["score", "person", "task", "image"], kind="stable").reset_index(drop=True)
    out.insert(0, "rank", np.arange(1, len(out) + 1))
    suspect = out["person"] + ":" + out["task"]
    suspect[out["task"] == "mask"] = suspect + ":" + out["image"]
    out.insert(1, "suspect", suspect)
    out["accept"] = ""
    return out
