"""The ``pseudo`` step: the eval photos a round's ensemble is sure of, labelled for the next round.

A photo passes when its ensemble's top 18-class probability reaches ``threshold`` and, for each
task of ``task_thresholds``, the probability of the label's class of that task (the 18-class
probabilities summed over the other two tasks) reaches the task's threshold. Its label is the
18-class argmax. The probabilities are the ensemble step's eval output, so where
``ensemble.persons`` pools or assigns labels per person, those person-consistent labels are the
ones used. The next round's training jobs add the passing photos to every fold's training rows.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from maskpipe.classes import PROB_COLUMNS, TASK_CLASS_NAMES, TASKS, class_names, decode, marginals
from maskpipe.io import read_csv, write_csv, write_json

log = logging.getLogger(__name__)

#: Columns of the labels file: the eval key, its label 0..17 and the probabilities it passed with.
LABEL_COLUMNS = ["key", "label", "confidence", *(f"{t}_confidence" for t in TASKS)]


def select(probs: pd.DataFrame, threshold: float, task_thresholds: dict[str, float] | None
           ) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """(every photo with its label, confidences and ``passed``; per task, which photos pass it).

    ``probs`` holds ``key`` and ``p00..p17``.
    """
    p = probs[PROB_COLUMNS].to_numpy(dtype=np.float64)
    label = p.argmax(1)
    rows = np.arange(len(p))
    parts = dict(zip(TASKS, decode(label), strict=True))
    margins = marginals(p)
    table = pd.DataFrame({"key": probs["key"].to_numpy(), "label": label, "confidence": p[rows, label],
                          **{f"{t}_confidence": margins[t][rows, parts[t]] for t in TASKS}})
    per_task = {t: table[f"{t}_confidence"].to_numpy() >= th for t, th in (task_thresholds or {}).items()}
    passed = table["confidence"].to_numpy() >= threshold
    for ok in per_task.values():
        passed &= ok
    return table.assign(passed=passed), per_task


def summarise(table: pd.DataFrame, per_task: dict[str, np.ndarray], threshold: float,
              task_thresholds: dict[str, float] | None) -> dict:
    """How many photos passed: overall, per class, per task class, and per task threshold."""
    chosen = table[table["passed"]]
    parts = dict(zip(TASKS, decode(chosen["label"].to_numpy()), strict=True))
    counts = np.bincount(chosen["label"], minlength=len(PROB_COLUMNS))
    return {
        "eval_photos": len(table), "pseudo_labelled": len(chosen),
        "share": round(len(chosen) / max(len(table), 1), 6),
        "threshold": threshold, "task_thresholds": task_thresholds,
        "per_class": dict(zip(class_names(), map(int, counts), strict=True)),
        "per_task": {t: {name: int((parts[t] == i).sum()) for i, name in enumerate(TASK_CLASS_NAMES[t])}
                     for t in TASKS},
        "passed_task_threshold": {t: int(ok.sum()) for t, ok in per_task.items()},
    }


def label_confident(probs_path: Path, threshold: float, task_thresholds: dict[str, float] | None,
        out_labels: Path, out_summary: Path) -> dict:
    """Write the passing photos (``LABEL_COLUMNS``) and a summary; return the summary."""
    probs = read_csv(probs_path, required=["key", *PROB_COLUMNS], dtype={"key": str})
    table, per_task = select(probs, threshold, task_thresholds)
    summary = summarise(table, per_task, threshold, task_thresholds)
    write_csv(table.loc[table["passed"], LABEL_COLUMNS].round(6), out_labels)
    write_json(summary, out_summary)
    log.info("pseudo-labels: %d of %d eval photos passed (threshold %s, per task %s)",
             summary["pseudo_labelled"], summary["eval_photos"], threshold, task_thresholds or "none")
    return summary
