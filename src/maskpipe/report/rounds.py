"""The report's "Pseudo-label rounds" section: each round's out-of-fold score, how many eval photos
the round trained on (per task and per class) and how many eval predictions it changed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from maskpipe.classes import PROB_COLUMNS, TASKS
from maskpipe.io import MaskpipeError, read_csv
from maskpipe.report.markup import Figures, esc, join, pct, table


@dataclass
class Rounds:
    """Per round (1, 2, ...): one row of scores and counts; per round 2..: its pseudo-labels by class."""

    scores: pd.DataFrame
    per_class: pd.DataFrame


def read(metrics: Sequence[Path], tests: Sequence[Path], summaries: Sequence[Path]) -> Rounds | None:
    """The rounds' table from every round's ensemble metrics and eval probabilities (round 1
    first) and every later round's pseudo-label summary; None without pseudo-label rounds."""
    from maskpipe.report.inputs import _read_json as _json  # inputs imports this module

    if not metrics:
        return None
    if len(tests) != len(metrics) or len(summaries) != len(metrics) - 1:
        raise MaskpipeError(f"report: {len(metrics)} round metrics file(s) need as many eval "
                            f"probability files (got {len(tests)}) and one pseudo-label summary "
                            f"fewer (got {len(summaries)})")
    rows, per_class, previous = [], {}, None
    for i, (m, t) in enumerate(zip(metrics, tests, strict=True)):
        met = _json(m, ["oof_macro_f1", "tasks"])
        probs = read_csv(t, ["key", *PROB_COLUMNS], dtype={"key": str}).set_index("key")
        pred = pd.Series(probs[PROB_COLUMNS].to_numpy().argmax(1), index=probs.index)
        row = {"round": i + 1, "OOF macro F1": met["oof_macro_f1"],
               **{f"{task} F1": met["tasks"].get(task, np.nan) for task in TASKS}}
        if i:
            s = _json(summaries[i - 1], ["pseudo_labelled", "share", "per_class", "per_task"])
            row.update({"pseudo-labelled": s["pseudo_labelled"], "share of eval": s["share"],
                        "eval predictions changed": int((pred != previous.reindex(pred.index)).sum())})
            per_class[f"round {i + 1}"] = s["per_class"]
        rows.append(row)
        previous = pred
    table_ = pd.DataFrame(rows)
    counts = pd.DataFrame(per_class).rename_axis("class").reset_index()
    return Rounds(table_.astype({c: "Int64" for c in ("pseudo-labelled", "eval predictions changed")}),
                  counts)


def section(r, figs: Figures) -> str:
    """The section, from ``r.rounds`` (a :class:`Rounds` or None)."""
    rounds: Rounds | None = r.rounds
    if rounds is None:
        return ("<p>No pseudo-label rounds (<code>pseudo.rounds: 0</code>): the submission is round "
                "1's ensemble.</p>")
    return join(
        f"<p>Round 1 is the pipeline above; each later round trains the models again with the eval "
        f"photos the previous round's ensemble was sure of added to every fold's training rows "
        f"(README \"Pseudo-labels\"). The submission is round {len(rounds.scores)}'s ensemble. Out-of-fold "
        "scores are on the labelled training images only; eval photos are never validated on.</p>",
        table(rounds.scores, {"share of eval": pct}),
        "<h3>Pseudo-labels per class</h3>",
        table(rounds.per_class) if not rounds.per_class.empty else f"<p>{esc('none')}</p>",
    )
