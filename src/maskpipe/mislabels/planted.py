"""Measure a ranking against the errors the demo generator planted (``planted_errors.csv``).

A planted error counts as found when its person and task (gender, age, swap) is among the first
``cut`` suspects. The naive baseline ranks persons without cleanlab, by their surest wrong
out-of-fold prediction (the report's "confident mistakes"), and counts a planted person as found
when the person is among the first ``cut`` persons, whatever the task: a lenient reading that
favours the baseline.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from maskpipe.classes import PROB_COLUMNS

#: Planted kind (the correction that undoes it) -> suspect task.
TASK_OF_KIND = {"gender": "gender", "age": "age", "swap_incorrect_normal": "swap"}


def _scores(found: int, planted: int, cut: int, listed: int) -> dict:
    return {"planted": planted, "cut": cut, "found": found,
            "recall": found / planted if planted else float("nan"),
            "precision": found / min(cut, listed) if min(cut, listed) else float("nan")}


def ranking_scores(suspects: pd.DataFrame, planted: pd.DataFrame, cut: int | None = None) -> dict:
    """Recall and precision of the first ``cut`` suspects (default: twice the planted count)."""
    cut = 2 * len(planted) if cut is None else cut
    top = set(zip(suspects["person"].head(cut), suspects["task"].head(cut), strict=True))
    hits = [(p, TASK_OF_KIND[k]) in top for p, k in zip(planted["person"], planted["kind"], strict=True)]
    return _scores(int(np.sum(hits)), len(planted), cut, len(suspects))


def naive_person_ranking(oof: pd.DataFrame) -> list[str]:
    """Persons by their surest wrong OOF prediction, surest first (persons without one follow)."""
    probs = oof[PROB_COLUMNS].to_numpy(dtype=float)
    pred = probs.argmax(axis=1)
    wrong_p = np.where(pred != oof["label"].to_numpy(), probs.max(axis=1), -1.0)
    per = pd.DataFrame({"person": oof["person"], "p": wrong_p}).groupby("person")["p"].max()
    return per.sort_values(ascending=False, kind="stable").index.tolist()


def baseline_scores(oof: pd.DataFrame, planted: pd.DataFrame, cut: int | None = None) -> dict:
    """:func:`ranking_scores` of the naive baseline, counted per person."""
    cut = 2 * len(planted) if cut is None else cut
    ranked = naive_person_ranking(oof)
    top = set(ranked[:cut])
    return _scores(int(planted["person"].isin(top).sum()), len(planted), cut, len(ranked))
