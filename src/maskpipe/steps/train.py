"""train: one model on one fold (and, in a pseudo-label round, ``retrain`` with its pseudo-labels)."""

from __future__ import annotations

from typing import Any

from maskpipe.dag.ports import Again, Job, Step, layout_port
from maskpipe.steps.external import EXTERNAL_CROPS

#: The training crops and their index, as train reads them (mislabels reads them too).
TRAIN_CROPS = (layout_port("crops", "crops", "train", help="training crops (.npy)"),
               layout_port("crop_index", "crop_index", "train", help="training crop index (.csv)"))

STEP = Step(
    "train", "train one model on one fold", ("train", "models.{model}"),
    inputs=(*TRAIN_CROPS, layout_port("labels", "labels", help="corrected labels"),
            layout_port("folds", "folds", help="person -> fold"), *EXTERNAL_CROPS),
    outputs=(layout_port("checkpoint", "checkpoint", per_job=True, help="best weights (.pt)"),
             layout_port("metrics", "train_metrics", per_job=True, help="history and best epoch (.json)"),
             layout_port("tensorboard", "tensorboard", per_job=True, folder=True,
                         help="TensorBoard log folder")),
    options=(layout_port("resume", "resume", per_job=True,
                         help="state after each epoch, for a killed job to resume from "
                              "(default: none, no resuming)", fill=False),),
    modules=("maskpipe.train.loop",), fan_out=True, local=False, threads=4, gpu=True,
    threads_option=True)

#: A pseudo-label round trains again with the round's pseudo-labelled eval photos added.
AGAIN = Again(
    "retrain", "train one model on one fold again, its training set plus the round's "
               "pseudo-labelled eval photos", (),
    (layout_port("pseudo_labels", "pseudo_labels", round="this", help="the round's pseudo-labels"),
     layout_port("eval_crops", "crops", "eval", help="eval crops"),
     layout_port("eval_index", "crop_index", "eval", help="eval crop index")))


def run(job: Job, cfg: dict[str, Any]) -> None:
    """Train ``models.MODEL`` on every fold but the job's, on a device of its own."""
    from maskpipe import devices
    from maskpipe.train import loop

    i, o = job.inputs, job.outputs
    # retrain (a pseudo-label round) runs this too, given the round's pseudo-labels
    pseudo = (i["eval_crops"], i["eval_index"], i["pseudo_labels"]) if "pseudo_labels" in i else None
    # the external faces (config external.folders), when there are any
    external = (i["external_crops"], i["external_labels"]) if i.get("external_crops") else None
    with devices.claim_device(cfg["train"]["device"]) as device:
        loop.train_fold(loop.TrainJob(
            model=job.model, fold=job.fold, crops=i["crops"], crop_index=i["crop_index"], labels=i["labels"],
            folds=i["folds"], checkpoint=o["checkpoint"], metrics=o["metrics"], tensorboard=o["tensorboard"],
            device=device, resume=job.options.get("resume"), pseudo=pseudo, external=external), cfg)
