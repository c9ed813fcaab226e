"""Thin shells between a job and the library: each reads its step's config sections only.

Every function takes a resolved :class:`maskpipe.dag.jobs.Job` (each file the step table names,
by port name) and the config sections its step declares (by dotted name, ``{model}`` filled), and
passes plain values on to the library. :mod:`maskpipe.dag.runner` calls them, for the CLI and
every in-process caller alike. The library is imported when a step runs: importing torch for
``maskpipe --help`` or another step's command would cost seconds for nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from maskpipe.dag.jobs import Job
from maskpipe.io import MaskpipeError, read_csv, write_csv

log = logging.getLogger(__name__)
Sections = dict[str, Any]


def validate(job: Job, cfg: Sections) -> None:
    from maskpipe.data.manifest import build_eval_manifest, build_train_manifest

    root = job.extra.get("root") or Path(cfg["data"]["root"])
    workers = max(2, (job.extra.get("threads") or 2) * 2)
    train = build_train_manifest(root, workers)
    evals = build_eval_manifest(root, workers)
    write_csv(train, job.outputs["train"])
    write_csv(evals, job.outputs["eval"])
    log.info("manifest: %d persons, %d training images, %d eval images",
             train["person"].nunique(), len(train), len(evals))


def crop(job: Job, cfg: Sections) -> None:
    from maskpipe import devices
    from maskpipe import crop as crop_step

    settings = cfg["crop"]
    with devices.claim_device(settings["device"]) as device:  # a GPU of its own, like train and predict
        crop_step.run(job.inputs["train_manifest"], job.inputs["eval_manifest"], job.options["root"],
                      job.outputs, job.options["cache"], settings, str(device),
                      workers=job.extra.get("workers"))


def persons(job: Job, cfg: Sections) -> None:
    from maskpipe.persons import step
    from maskpipe.persons.group import Grouping

    step.run(job.inputs["eval_manifest"], job.options["root"], job.inputs["eval_crops"],
             job.inputs["eval_index"], Grouping(**cfg["persons"]), job.outputs["groups"])


def labels(job: Job, cfg: Sections) -> None:
    from maskpipe.labels import add_training_targets, apply_corrections, read_corrections

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


def folds(job: Job, cfg: Sections) -> None:
    from maskpipe.folds import assign_folds

    settings = cfg["folds"]
    table = read_csv(job.inputs["labels"], required=["person", "gender_id", "age_group", "train_age_group"],
                     dtype={"id": str})
    out = assign_folds(table, settings["k"], settings["seed"])
    write_csv(out, job.outputs["folds"])
    log.info("folds: %d persons in %d folds of %s persons", len(out), settings["k"],
             "/".join(str(n) for n in out["fold"].value_counts().sort_index()))


def train(job: Job, cfg: Sections) -> None:
    from maskpipe import devices
    from maskpipe.train import loop

    train_cfg, model_cfg = cfg["train"], cfg[f"models.{job.model}"]
    i = job.inputs
    # retrain (a pseudo-label round) runs this too, given the round's pseudo-labels
    pseudo = (i["eval_crops"], i["eval_index"], i["pseudo_labels"]) if "pseudo_labels" in i else None
    with devices.claim_device(train_cfg["device"]) as device:
        loop.train_fold(i["crops"], i["crop_index"], i["labels"], i["folds"], job.fold, job.model,
                        model_cfg, train_cfg, device, job.outputs["checkpoint"],
                        job.outputs["metrics"], job.outputs["tensorboard"],
                        resume_file=job.options.get("resume"), pseudo=pseudo)


def predict(job: Job, cfg: Sections) -> None:
    from maskpipe import devices
    from maskpipe import predict as predict_step

    settings, i = cfg["predict"], job.inputs
    with devices.claim_device(settings["device"]) as device:
        predict_step.run(i["checkpoint"], job.fold, job.model, i["train_crops"], i["train_index"],
                         i["eval_crops"], i["eval_index"], i["labels"], i["folds"], settings["tta"],
                         settings["batch_size"], device, job.outputs["oof"], job.outputs["test"],
                         settings["amp"])


def ensemble(job: Job, cfg: Sections) -> None:
    from maskpipe import ensemble as ensemble_step

    settings, i, o = cfg["ensemble"], job.inputs, job.outputs
    ensemble_step.run(i["oof"], i["test"], i["labels"], settings["method"], settings["weights"],
                      o["oof"], o["test"], o["scores"], o["metrics"],
                      settings["search_weights"], settings["age_bias"], settings["seed"],
                      persons=i["persons"], person_options=settings["persons"],
                      prior_shift=settings["prior_shift"])


def pseudo(job: Job, cfg: Sections) -> None:
    from maskpipe import pseudo as pseudo_step

    pseudo_step.run(job.inputs["probs"], cfg["pseudo.threshold"], cfg["pseudo.task_thresholds"],
                    job.outputs["labels"], job.outputs["summary"])


def mislabels(job: Job, cfg: Sections) -> None:
    from maskpipe.mislabels import step

    # By hand, the ranking's files are optional (mislabels --accept needs none of them).
    missing = [f"--{prefix}{name.replace('_', '-')}" for prefix, side in (("", job.inputs), ("out-", job.outputs))
               for name, path in side.items() if path is None]
    if missing:
        raise MaskpipeError(f"ranking needs {', '.join(missing)} (or pass --accept to accept fixes)")
    settings, i, o = cfg["mislabels"], job.inputs, job.outputs
    step.run(i["oof"], i["labels"], i["crops"], i["crop_index"], settings["method"], settings["top"],
             settings["thumbnail"], o["suspects"], o["review"], o["summary"])


def submit(job: Job, cfg: Sections) -> None:
    from maskpipe import submission as submission_step

    sub = submission_step.run(job.inputs["probs"], job.inputs["eval_manifest"], job.outputs["submission"])
    log.info("submission: %d rows written to %s", len(sub), job.outputs["submission"])


def report(job: Job, cfg: Sections) -> None:
    from maskpipe.report import ReportInputs, build_report

    # ReportInputs' fields are the report step's inputs in the table, by name.
    o = job.outputs
    build_report(ReportInputs(**job.inputs), cfg["report"]["title"], o["report"], o["figures"], o["history"])
    log.info("report written to %s", o["report"])
