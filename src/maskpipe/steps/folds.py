"""folds: person-grouped, stratified K folds."""

from __future__ import annotations

import logging
from typing import Any

from maskpipe.dag.ports import Job, Step, layout_port
from maskpipe.io import read_csv, write_csv

log = logging.getLogger(__name__)

STEP = Step(
    "folds", "person-grouped, stratified K folds", ("folds",),
    inputs=(layout_port("labels", "labels", help="corrected labels"),),
    outputs=(layout_port("folds", "folds", help="person -> fold (.csv)"),),
    modules=("maskpipe.data.folds",))


def run(job: Job, cfg: dict[str, Any]) -> None:
    """Assign every person a fold (``folds.k``, ``folds.seed``)."""
    from maskpipe.data.folds import assign_folds

    settings = cfg["folds"]
    table = read_csv(job.inputs["labels"], required=["person", "gender_id", "age_group", "train_age_group"],
                     dtype={"id": str})
    out = assign_folds(table, settings["k"], settings["seed"])
    write_csv(out, job.outputs["folds"])
    log.info("folds: %d persons in %d folds of %s persons", len(out), settings["k"],
             "/".join(str(n) for n in out["fold"].value_counts().sort_index()))
