"""The competition metric, defined once.

Macro F1 is scikit-learn's over all 18 labels (``labels=range(18)``): a class absent from both
the truth and the predictions scores 0 and still counts in the mean. torchmetrics would skip such
a class; the leaderboard's definition is not published, so maskpipe takes the stricter reading.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import f1_score

from maskpipe import classes

F1_DEFINITION = ("macro F1 over all 18 classes (scikit-learn, labels=0..17); a class absent "
                 "from both truth and predictions counts as 0")


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int = classes.NUM_CLASSES) -> float:
    """Macro F1 over ``n_classes`` labels, absent classes counted as 0."""
    return float(f1_score(y_true, y_pred, labels=list(range(n_classes)), average="macro",
                          zero_division=0))


def per_class_f1(y_true: np.ndarray, y_pred: np.ndarray) -> list[float]:
    """F1 of each of the 18 classes."""
    scores = f1_score(y_true, y_pred, labels=list(range(classes.NUM_CLASSES)), average=None,
                      zero_division=0)
    return [float(s) for s in scores]


def head_score(head: str, official: np.ndarray, pred: np.ndarray) -> tuple[float, float, dict[str, float]]:
    """(macro F1, accuracy, per-task F1) of predictions against official 18-class labels.

    ``head`` is ``single``/``multitask`` (``pred`` holds 18-class indices) or a task name (``pred``
    holds that task's indices, scored against the task part of the official label).
    """
    if head in classes.TASKS:
        truth = classes.decode(official)[list(classes.TASKS).index(head)]
        f1 = macro_f1(truth, pred, classes.TASKS[head])
        return f1, float((pred == truth).mean()), {head: f1}
    return macro_f1(official, pred), float((pred == official).mean()), task_f1(official, pred)


def task_f1(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Macro F1 of each task (mask 3, gender 2, age 3) from 18-class labels."""
    t, p = classes.decode(y_true), classes.decode(y_pred)
    return {name: macro_f1(tt, pp, n) for (name, n), tt, pp in zip(classes.TASKS.items(), t, p, strict=True)}
