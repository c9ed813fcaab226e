"""ensemble: the soft vote over every model x fold, scored out of fold."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from maskpipe.dag.ports import Again, Job, Step, layout_port
from maskpipe.steps.teacher import ESTIMATES

STEP = Step(
    "ensemble", "soft vote over models and folds, scored OOF", ("ensemble",),
    inputs=(layout_port("oof", "oof", every_job=True, help="every model x fold's OOF file"),
            layout_port("test", "test_probs", every_job=True, help="every model x fold's test file"),
            layout_port("labels", "labels", help="corrected labels"),
            layout_port("persons", "persons_groups", help="eval photo groups (used where "
                                                          "ensemble.persons enables them)"),
            # Only with the teacher on: off, the command, the rule and the stage are as before it.
            *(replace(p, name=f"teacher_{p.name}", when="teacher.enabled",
                      help=f"the teacher's {p.help} (with teacher.enabled)") for p in ESTIMATES)),
    outputs=(layout_port("oof", "ensemble_oof", help="ensemble OOF probabilities"),
             layout_port("test", "ensemble_test", help="ensemble eval probabilities"),
             layout_port("scores", "ensemble_scores", help="per model x fold scores"),
             # Cached like every output: results/ is not in git, so metrics must travel with
             # `dvc push` / `dvc pull` (cache: false would leave them behind).
             layout_port("metrics", "metrics", help="ensemble metrics (.json)", dvc="metrics")),
    modules=("maskpipe.ensemble.vote",))

#: A pseudo-label round votes over its own predictions.
AGAIN = Again("reensemble", "a round's soft vote (models not trained again vote with their "
                            "round-1 predictions)", ("oof", "test"))


def run(job: Job, cfg: dict[str, Any]) -> None:
    """Vote, fit what ``ensemble`` asks to fit, and score out of fold."""
    from maskpipe.ensemble.vote import EnsembleConfig, EnsembleJob, ensemble_folds

    i, o = job.inputs, job.outputs
    ensemble_folds(EnsembleJob(oof=i["oof"], test=i["test"], labels=i["labels"], out_oof=o["oof"],
                               out_test=o["test"], out_scores=o["scores"], out_metrics=o["metrics"],
                               persons=i["persons"], teacher_train=i.get("teacher_train"),
                               teacher_eval=i.get("teacher_eval")),
                   EnsembleConfig(**cfg["ensemble"]))
