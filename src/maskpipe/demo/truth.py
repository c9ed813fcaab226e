"""Scores against the truth a generated set knows (benchmarks and tests; no step runs them).

**Planted errors** (``demo-data --plant-errors``, ``planted_errors.csv``): a planted error counts
as found when its person and task (gender, age, swap) is among the first ``cut`` suspects. The
naive baseline ranks persons without cleanlab, by their surest wrong out-of-fold prediction (the
report's "confident mistakes"), and counts a planted person as found when the person is among
the first ``cut`` persons, whatever the task: a lenient reading that favours the baseline.

**Eval persons** (``demo_truth.csv``'s ``person``): a grouping of eval photos scored pairwise
(precision, recall, F1) and by the persons it finds whole.
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


def score_groups(groups: np.ndarray, persons: np.ndarray) -> dict[str, float]:
    """Pairwise scores of a grouping against the true persons of the same photos.

    A pair of photos is predicted together when both have the same group, and truly together when
    both are one person (scikit-learn's pair confusion matrix counts the pairs). ``whole`` is the
    share of persons whose photos are exactly one group (nothing missing, nothing added).
    """
    from sklearn.metrics.cluster import pair_confusion_matrix

    groups, persons = np.asarray(groups), np.asarray(persons)
    if groups.shape != persons.shape:
        raise ValueError(f"score_groups: {len(groups)} groups for {len(persons)} persons")
    (_, fp), (fn, tp) = pair_confusion_matrix(persons, groups)  # ordered pairs, counted twice
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    whole = 0
    for p in np.unique(persons):
        g = np.unique(groups[persons == p])
        whole += len(g) == 1 and int((groups == g[0]).sum()) == int((persons == p).sum())
    n_persons = len(np.unique(persons))
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1),
            "whole": whole / n_persons if n_persons else 1.0, "persons": n_persons,
            "groups": int(len(np.unique(groups)))}
