"""The report's "Pseudo-label rounds" section: each round's out-of-fold score, how many eval photos
the round trained on (per task and per class) and how many eval predictions it changed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from maskpipe.classes import PROB_COLUMNS, TASK_CLASS_NAMES, TASKS, class_names
from maskpipe.io import MaskpipeError, read_csv, read_json
from maskpipe.report.markup import Figures, join, pct, table


@dataclass
class Rounds:
    """Per round (1, 2, ...): one row of scores and counts; per round 2..: its pseudo-labels by
    task class and by class (classes no round labelled left out)."""

    scores: pd.DataFrame
    per_task: pd.DataFrame
    per_class: pd.DataFrame


def read(metrics: Sequence[Path], tests: Sequence[Path], summaries: Sequence[Path]) -> Rounds | None:
    """The rounds' table from every round's ensemble metrics and eval probabilities (round 1
    first) and every later round's pseudo-label summary; None without pseudo-label rounds."""
    if not metrics:
        return None
    if len(tests) != len(metrics) or len(summaries) != len(metrics) - 1:
        raise MaskpipeError(f"report: {len(metrics)} round metrics file(s) need as many eval "
                            f"probability files (got {len(tests)}) and one pseudo-label summary "
                            f"fewer (got {len(summaries)})")
    rows, per_task, per_class, previous = [], {}, {}, None
    for i, (m, t) in enumerate(zip(metrics, tests, strict=True)):
        met = read_json(m, ["oof_macro_f1", "tasks"])
        probs = read_csv(t, ["key", *PROB_COLUMNS], dtype={"key": str}).set_index("key")
        pred = pd.Series(probs[PROB_COLUMNS].to_numpy().argmax(1), index=probs.index)
        row = {"round": i + 1, "OOF macro F1": met["oof_macro_f1"],
               **{f"{task} F1": met["tasks"].get(task, np.nan) for task in TASKS}}
        if i:
            s = read_json(summaries[i - 1], ["pseudo_labelled", "share", "per_class", "per_task"])
            row.update({"pseudo-labelled": s["pseudo_labelled"], "share of eval": s["share"],
                        "eval predictions changed": int((pred != previous.reindex(pred.index)).sum())})
            per_class[f"round {i + 1}"] = s["per_class"]
            per_task[f"round {i + 1}"] = {(t, name): n for t, counts in s["per_task"].items()
                                          for name, n in counts.items()}
        rows.append(row)
        previous = pred
    tasks = pd.DataFrame(per_task).reindex(pd.MultiIndex.from_tuples(
        [(t, name) for t in TASKS for name in TASK_CLASS_NAMES[t]], names=["task", "class"]))
    classes = pd.DataFrame(per_class).reindex(class_names()).rename_axis("class")
    classes = classes[classes.sum(axis=1) > 0]  # in class order, without classes never labelled
    return Rounds(pd.DataFrame(rows), tasks.reset_index(), classes.reset_index())


def _count(value: float) -> str:
    return "–" if pd.isna(value) else str(int(value))


def section(r, figs: Figures) -> str:
    """The section, from ``r.rounds`` (a :class:`Rounds` or None)."""
    rounds: Rounds | None = r.rounds
    if rounds is None:
        return ("<p>No pseudo-label rounds (<code>pseudo.rounds: 0</code>): the submission is round "
                "1's ensemble.</p>")
    return join(
        f"<p>Round 1 is the pipeline above; each later round trains the models again with the eval "
        f"photos the previous round's ensemble was sure of added to every fold's training rows "
        f"(docs/pseudo.md). The submission is round {len(rounds.scores)}'s ensemble. Out-of-fold "
        "scores are on the labelled training images only; eval photos are never validated on.</p>",
        table(rounds.scores, {"share of eval": pct, "pseudo-labelled": _count,
                              "eval predictions changed": _count}),
        "<h3>Pseudo-labels per task</h3>",
        table(rounds.per_task, {c: _count for c in rounds.per_task.columns if c.startswith("round")}),
        "<h3>Pseudo-labels per class</h3>",
        table(rounds.per_class, {c: _count for c in rounds.per_class.columns if c.startswith("round")})
        if not rounds.per_class.empty else "<p>No eval photo passed in any round.</p>",
    )
