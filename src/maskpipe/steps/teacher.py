"""teacher: dlib's pretrained age and gender networks on every photo whose face they can align."""

from __future__ import annotations

from typing import Any

from maskpipe.dag.ports import Job, Port, Step, layout_port

#: The teacher's estimates, one table per split: what the ensemble reads when the teacher is on.
ESTIMATES = (layout_port("train", "teacher_estimates", "train", help="training photos' estimates (.csv)"),
             layout_port("eval", "teacher_estimates", "eval", help="eval photos' estimates (.csv)"))

STEP = Step(
    "teacher", "pretrained age and gender estimates per photo (dlib's networks)", ("teacher",),
    inputs=(layout_port("train_manifest", "manifest", "train", help="training manifest"),
            layout_port("eval_manifest", "manifest", "eval", help="eval manifest"),
            # The photos are read below the root option, as the crop step reads them; the
            # manifests hold their SHA-256, so an edited photo reruns this step anyway.
            # Read only to pool: without teacher.pool, regrouping the eval photos reruns nothing.
            layout_port("persons", "persons_groups", help="eval photo groups", when="teacher.pool")),
    outputs=ESTIMATES,
    options=(Port("root", "data folder the manifest paths start from (default: data.root)",
                  config="data.root"),
             layout_port("cache", "teacher_cache", help="estimate cache folder (default: "
                                                        "cache/teacher under results)")),
    modules=("maskpipe.teacher.photos",), local=False, when="teacher.enabled")


def run(job: Job, cfg: dict[str, Any]) -> None:
    """Estimate train and eval photos with the ``teacher`` settings."""
    from maskpipe.teacher.photos import TeacherSettings, teach_splits

    i, o = job.inputs, job.outputs
    teach_splits(i["train_manifest"], i["eval_manifest"], i.get("persons"), job.options["root"],
                 job.options["cache"], TeacherSettings(**cfg["teacher"]), o["train"], o["eval"])
