"""pseudo: label the eval photos the previous round's ensemble is sure of (pseudo-label rounds)."""

from __future__ import annotations

from typing import Any

from maskpipe.dag.ports import Job, Step, layout_port

# Only the keys that change its labels: adding a round or choosing other models to train again
# reruns no round that exists already.
STEP = Step(
    "pseudo", "label the eval photos the previous round's ensemble is sure of",
    ("pseudo.threshold", "pseudo.task_thresholds"),
    inputs=(layout_port("probs", "ensemble_test", round="previous",
                        help="the previous round's ensemble eval probabilities (person-consistent "
                             "where ensemble.persons is on)"),),
    outputs=(layout_port("labels", "pseudo_labels", round="this",
                         help="eval photos that passed: key, label 0..17, confidences (.csv)"),
             layout_port("summary", "pseudo_summary", round="this", dvc="metrics",
                         help="how many passed, per class and per task (.json)")),
    modules=("maskpipe.pseudo",), rounds=True)


def run(job: Job, cfg: dict[str, Any]) -> None:
    """Keep the photos whose probabilities pass the thresholds."""
    from maskpipe import pseudo as pseudo_step

    pseudo_step.label_confident(job.inputs["probs"], cfg["pseudo.threshold"], cfg["pseudo.task_thresholds"],
                    job.outputs["labels"], job.outputs["summary"])
