"""labels: apply the person-level label corrections and add the training targets."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from maskpipe.dag.ports import Job, Port, Step, layout_port
from maskpipe.io import read_csv, write_csv

log = logging.getLogger(__name__)

STEP = Step(
    "labels", "apply person-level label corrections", ("labels",),
    inputs=(layout_port("manifest", "manifest", "train", help="training manifest"),
            Port("corrections", "labels.corrections", config="labels.corrections", cli=False)),
    outputs=(layout_port("labels", "labels", help="corrected labels (.csv)"),
             layout_port("applied", "corrections_applied", help="the fixes applied (.csv)")),
    modules=("maskpipe.data.labels",))


def run(job: Job, cfg: dict[str, Any]) -> None:
    """Correct the manifest's labels with ``labels.corrections``; learn ``train_age_bounds``."""
    from maskpipe.data.labels import add_training_targets, apply_corrections, read_corrections

    settings = cfg["labels"]
    manifest = read_csv(job.inputs["manifest"], dtype={"key": str, "id": str})
    fixes, source = [], "no corrections"
    if settings["corrections"]:
        source = settings["corrections"]
        fixes = read_corrections(Path(source))
    corrected, applied = apply_corrections(manifest, fixes, source)
    corrected = add_training_targets(corrected, tuple(settings["train_age_bounds"]))
    write_csv(corrected, job.outputs["labels"])
    write_csv(applied, job.outputs["applied"])
    log.info("labels: %d fix(es) applied from %s; %d images kept", len(applied), source,
             len(corrected))
