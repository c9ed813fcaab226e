"""predict: out-of-fold and eval probabilities of one model x fold, with TTA."""

from __future__ import annotations

from typing import Any

from maskpipe.dag.ports import Again, Job, Step, layout_port

STEP = Step(
    "predict", "out-of-fold and test probabilities with TTA", ("predict",),
    inputs=(layout_port("checkpoint", "checkpoint", per_job=True, help="the job's trained weights"),
            layout_port("train_crops", "crops", "train", help="training crops"),
            layout_port("train_index", "crop_index", "train", help="training crop index"),
            layout_port("eval_crops", "crops", "eval", help="eval crops"),
            layout_port("eval_index", "crop_index", "eval", help="eval crop index"),
            layout_port("labels", "labels", help="corrected labels"),
            layout_port("folds", "folds", help="person -> fold")),
    outputs=(layout_port("oof", "oof", per_job=True, help="out-of-fold probabilities (.csv)"),
             layout_port("test", "test_probs", per_job=True, help="eval probabilities (.csv)")),
    modules=("maskpipe.train.predict",), fan_out=True, local=False, threads=4, gpu=True,
    threads_option=True)

#: A pseudo-label round predicts with the round's checkpoint.
AGAIN = Again("repredict", "out-of-fold and test probabilities of a round's model x fold",
              ("checkpoint",))


def run(job: Job, cfg: dict[str, Any]) -> None:
    """Predict the job's fold and the eval photos, on a device of its own."""
    from maskpipe import devices
    from maskpipe.train import predict as predict_step

    i = job.inputs
    with devices.claim_device(cfg["predict"]["device"]) as device:
        predict_step.predict_fold(predict_step.PredictJob(
            job.model, job.fold, i["checkpoint"], i["train_crops"], i["train_index"], i["eval_crops"],
            i["eval_index"], i["labels"], i["folds"], job.outputs["oof"], job.outputs["test"], device),
            cfg["predict"])
