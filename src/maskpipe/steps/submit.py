"""submit: the checked ``ImageID,ans`` file of the last round's ensemble."""

from __future__ import annotations

import logging
from typing import Any

from maskpipe.dag.ports import Job, Step, layout_port

log = logging.getLogger(__name__)

STEP = Step(
    "submit", "write the checked ImageID,ans file", (),
    inputs=(layout_port("probs", "ensemble_test", round="last",
                        help="the last round's ensemble eval probabilities"),
            layout_port("eval_manifest", "manifest", "eval", help="eval manifest")),
    outputs=(layout_port("submission", "submission", help="ImageID,ans in info.csv order"),),
    modules=("maskpipe.submission",))


def run(job: Job, cfg: dict[str, Any]) -> None:
    """Write the submission in ``info.csv`` order, checked."""
    from maskpipe import submission as submission_step

    sub = submission_step.write_submission(job.inputs["probs"], job.inputs["eval_manifest"], job.outputs["submission"])
    log.info("submission: %d rows written to %s", len(sub), job.outputs["submission"])
