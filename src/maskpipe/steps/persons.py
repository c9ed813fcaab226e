"""persons: group the eval photos back into persons, by shoot and face."""

from __future__ import annotations

from typing import Any

from maskpipe.dag.ports import Job, Port, Step, layout_port

STEP = Step(
    "persons", "group the eval photos into persons by shoot and face", ("persons",),
    inputs=(layout_port("eval_manifest", "manifest", "eval", help="eval manifest"),
            layout_port("eval_crops", "crops", "eval", help="eval crops"),
            # The photos themselves are read below the root option, not declared: the manifest
            # holds each one's SHA-256, so an edited photo reruns this step anyway (and
            # `snakemake --lint` refuses a param that prefixes an input).
            layout_port("eval_index", "crop_index", "eval", help="eval crop index")),
    outputs=(layout_port("groups", "persons_groups",
                         help="per eval photo: its group, the group's size, a confidence (.csv)"),),
    options=(Port("root", "data folder the manifest paths start from (default: data.root)",
                  config="data.root"),),
    modules=("maskpipe.persons.eval_photos",))


def run(job: Job, cfg: dict[str, Any]) -> None:
    """Group the eval photos with the ``persons`` settings."""
    from maskpipe.persons.eval_photos import group_eval_photos
    from maskpipe.persons.group import Grouping

    group_eval_photos(job.inputs["eval_manifest"], job.options["root"], job.inputs["eval_crops"],
             job.inputs["eval_index"], Grouping(**cfg["persons"]), job.outputs["groups"])
