"""Thin shells between the CLI and the library: each reads its step's config sections only.

Every function takes the parsed arguments (each file the step table names is ``args.NAME`` for an
input and ``args.out_NAME`` for an output) and a ``load_config`` callable, fetches the sections
listed for its step in :data:`maskpipe.pipeline.STEPS` and passes plain values on.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from pathlib import Path

from maskpipe.config import Config
from maskpipe.io import MaskpipeError, read_csv, write_csv
from maskpipe.layout import Layout
from maskpipe.pipeline import STEPS
from maskpipe.rounds import last_round

log = logging.getLogger(__name__)
Loader = Callable[[argparse.Namespace], Config]


_REAL_ONLY = ("eval_persons", "landmark_cache", "face_region", "female_share", "old_share", "old_ages",
              "eval_male_share", "eval_old_share", "min_age")


def demo_data(args: argparse.Namespace, load_config: Loader) -> None:
    from maskpipe.data.demo import generate_demo
    from maskpipe.data.realfaces import Priors, generate_realfaces

    if args.faces is None:
        real_only = [k for k in _REAL_ONLY if getattr(args, k) is not None]
        if real_only:
            raise MaskpipeError(f"demo-data: --{real_only[0].replace('_', '-')} needs --faces "
                                "(the embedded demo has fixed statistics and counts --eval-images)")
        kwargs = {k: v for k, v in (("persons", args.persons), ("eval_images", args.eval_images))
                  if v is not None}
        summary = generate_demo(args.out, seed=args.seed, plant_errors=args.plant_errors, **kwargs)
        log.info("demo data in %s: %s", args.out, summary)
        return
    if args.eval_images is not None:
        raise MaskpipeError("demo-data: with --faces, eval is counted in persons: use --eval-persons")
    given = {k: getattr(args, k) for k in _REAL_ONLY[3:] if getattr(args, k) is not None}
    priors = Priors(**{k: tuple(v) if isinstance(v, list) else v for k, v in given.items()})
    kwargs = {k: v for k, v in (("persons", args.persons), ("eval_persons", args.eval_persons),
                                ("face_region", args.face_region)) if v is not None}
    summary = generate_realfaces(args.out, args.faces, seed=args.seed, plant_errors=args.plant_errors,
                                 priors=priors, landmark_cache=args.landmark_cache, **kwargs)
    log.info("real-faces data in %s: %s", args.out, summary)


def validate(args: argparse.Namespace, load_config: Loader) -> None:
    from maskpipe.data.manifest import build_eval_manifest, build_train_manifest

    root = args.root or Path(load_config(args).params("validate")["data"]["root"])
    workers = max(2, (args.threads or 2) * 2)
    train = build_train_manifest(root, workers)
    evals = build_eval_manifest(root, workers)
    write_csv(train, args.out_train)
    write_csv(evals, args.out_eval)
    log.info("manifest: %d persons, %d training images, %d eval images",
             train["person"].nunique(), len(train), len(evals))


def crop(args: argparse.Namespace, load_config: Loader) -> None:
    from maskpipe import crop as crop_step
    from maskpipe.train.devices import claim_device

    config = load_config(args)
    cfg = config.params("crop")["crop"]
    outputs = {p.name: getattr(args, f"out_{p.name}") for p in STEPS["crop"].outputs}
    # By hand, the data folder and the cache default to the config's (the engines pass both).
    root = args.root or Path(config.raw["data"]["root"])
    cache = args.cache or Path(Layout(str(config.results)).crop_cache())
    with claim_device(cfg["device"]) as device:  # a GPU of its own, like train and predict
        crop_step.run(args.train_manifest, args.eval_manifest, root, outputs, cache, cfg,
                      str(device), workers=args.workers)


def persons(args: argparse.Namespace, load_config: Loader) -> None:
    from maskpipe.persons import step
    from maskpipe.persons.group import Grouping

    config = load_config(args)
    root = args.root or Path(config.raw["data"]["root"])  # by hand, the config's data folder
    grouping = Grouping(**config.params("persons")["persons"])
    step.run(args.eval_manifest, root, args.eval_crops, args.eval_index, grouping, args.out_groups)


def labels(args: argparse.Namespace, load_config: Loader) -> None:
    from maskpipe.labels import add_training_targets, apply_corrections, read_corrections

    cfg = load_config(args).params("labels")["labels"]
    manifest = read_csv(args.manifest, dtype={"key": str, "id": str})
    fixes, source = [], "no corrections"
    if cfg["corrections"]:
        source = cfg["corrections"]
        fixes = read_corrections(Path(source))
    corrected, applied = apply_corrections(manifest, fixes, source)
    corrected = add_training_targets(corrected, tuple(cfg["train_age_bounds"]))
    write_csv(corrected, args.out_labels)
    write_csv(applied, args.out_applied)
    log.info("labels: %d fix(es) applied from %s; %d images kept", len(applied), source,
             len(corrected))


def folds(args: argparse.Namespace, load_config: Loader) -> None:
    from maskpipe.folds import assign_folds

    cfg = load_config(args).params("folds")["folds"]
    table = read_csv(args.labels, required=["person", "gender_id", "age_group", "train_age_group"],
                     dtype={"id": str})
    out = assign_folds(table, cfg["k"], cfg["seed"])
    write_csv(out, args.out_folds)
    log.info("folds: %d persons in %d folds of %s persons", len(out), cfg["k"],
             "/".join(str(n) for n in out["fold"].value_counts().sort_index()))


def train(args: argparse.Namespace, load_config: Loader) -> None:
    from maskpipe.train.devices import claim_device
    from maskpipe.train.loop import train_fold

    params = load_config(args).params("train", model=args.model)
    train_cfg, model_cfg = params["train"], params[f"models.{args.model}"]
    # retrain (a pseudo-label round) runs this too, given the round's pseudo-labels
    pseudo_labels = getattr(args, "pseudo_labels", None)
    pseudo = None if pseudo_labels is None else (args.eval_crops, args.eval_index, pseudo_labels)
    with claim_device(train_cfg["device"]) as device:
        train_fold(args.crops, args.crop_index, args.labels, args.folds, args.fold, args.model,
                   model_cfg, train_cfg, device, args.out_checkpoint, args.out_metrics,
                   args.out_tensorboard, resume_file=args.resume, pseudo=pseudo)


def predict(args: argparse.Namespace, load_config: Loader) -> None:
    from maskpipe import predict as predict_step
    from maskpipe.train.devices import claim_device

    cfg = load_config(args).params("predict")["predict"]
    with claim_device(cfg["device"]) as device:
        predict_step.run(args.checkpoint, args.fold, args.model, args.train_crops,
                         args.train_index, args.eval_crops, args.eval_index, args.labels,
                         args.folds, cfg["tta"], cfg["batch_size"], device, args.out_oof,
                         args.out_test, cfg["amp"])


def ensemble(args: argparse.Namespace, load_config: Loader) -> None:
    from maskpipe import ensemble as ensemble_step

    cfg = load_config(args).params("ensemble")["ensemble"]
    ensemble_step.run(args.oof, args.test, args.labels, cfg["method"], cfg["weights"],
                      args.out_oof, args.out_test, args.out_scores, args.out_metrics,
                      cfg["search_weights"], cfg["age_bias"], cfg["seed"],
                      persons=args.persons, person_options=cfg["persons"],
                      prior_shift=cfg["prior_shift"])


def pseudo(args: argparse.Namespace, load_config: Loader) -> None:
    from maskpipe import pseudo as pseudo_step

    cfg = load_config(args).params("pseudo")
    pseudo_step.run(args.probs, cfg["pseudo.threshold"], cfg["pseudo.task_thresholds"],
                    args.out_labels, args.out_summary)


def mislabels(args: argparse.Namespace, load_config: Loader) -> None:
    from maskpipe.mislabels import step

    cfg = load_config(args)
    if args.accept or args.accept_marked:
        # Not a pipeline step: it writes the labels step's input, so it reads where that lives.
        layout = Layout(str(cfg.results))
        suspects = args.suspects or Path(layout.mislabels_suspects())
        step.accept(suspects, suspects.parent / Path(layout.mislabels_summary()).name,
                    cfg.params("labels")["labels"]["corrections"], args.accept, args.accept_marked)
        return
    ports = [(p, False) for p in STEPS["mislabels"].inputs] + [(p, True) for p in STEPS["mislabels"].outputs]
    missing = [p.flag(out) for p, out in ports if getattr(args, ("out_" if out else "") + p.name) is None]
    if missing:
        raise MaskpipeError(f"ranking needs {', '.join(missing)} (or pass --accept to accept fixes)")
    mcfg = cfg.params("mislabels")["mislabels"]
    step.run(args.oof, args.labels, args.crops, args.crop_index, mcfg["method"], mcfg["top"],
             mcfg["thumbnail"], args.out_suspects, args.out_review, args.out_summary)


def submit(args: argparse.Namespace, load_config: Loader) -> None:
    from maskpipe import submission as submission_step

    sub = submission_step.run(args.probs, args.eval_manifest, args.out_submission)
    log.info("submission: %d rows written to %s", len(sub), args.out_submission)


def report(args: argparse.Namespace, load_config: Loader) -> None:
    from maskpipe.report import ReportInputs, build_report

    cfg = load_config(args).params("report")["report"]
    # ReportInputs' fields are the report step's inputs in the table, by name.
    inputs = ReportInputs(**{p.name: getattr(args, p.name) for p in STEPS["report"].inputs})
    build_report(inputs, cfg["title"], args.out_report, args.out_figures, args.out_history)
    log.info("report written to %s", args.out_report)


def dvc_yaml(args: argparse.Namespace, load_config: Loader) -> None:
    import os

    from maskpipe.dvcgen import render_dvc_yaml, render_params
    from maskpipe.io import write_bytes_if_changed

    files = [str(f) for f in args.config or [Path("config.yaml")]]
    cfg = load_config(args)
    start = args.out.parent
    texts = {}
    if len(files) == 1:
        params_file = files[0]
    else:  # DVC compares params in one file: write the merged config for it
        params = args.params or start / "params.yaml"
        params_file = os.path.relpath(params, start)
        texts[params] = render_params(cfg, files)
    texts[args.out] = render_dvc_yaml(cfg, params_file, str(start))
    for path, text in texts.items():
        if args.check:
            if (path.read_text() if path.is_file() else "") != text:
                raise MaskpipeError(f"{path} is out of date with the config; run `maskpipe dvc-yaml`")
            continue
        changed = write_bytes_if_changed(path, text.encode())
        log.info("%s %s", path, "written" if changed else "already up to date")


def step_table(args: argparse.Namespace, load_config: Loader) -> str:
    """``maskpipe steps``: the step table of :mod:`maskpipe.pipeline` (the CLI prints it)."""
    from maskpipe.steptable import table

    return table(args.format)


def search(args: argparse.Namespace, load_config: Loader) -> str:
    """``maskpipe search``: run or continue the hyperparameter search (not a pipeline step)."""
    from maskpipe.search import run_search

    files = args.config or [Path("config.yaml")]
    for name, value in (("--trials", args.trials), ("--parallel", args.parallel)):
        if value is not None and value < 1:
            raise MaskpipeError(f"search: {name} must be at least 1, got {value}")
    done = run_search(files, args.trials, args.parallel, args.write_recipe, args.out)
    if done.best_score is None:
        return f"search: no completed trial yet; see {done.folder / 'trials.csv'}"
    return (f"best out-of-fold macro F1 {done.best_score:.4f} ({done.completed} trials): "
            f"{done.folder / 'best.yaml'}, {done.folder / 'report.html'}")


def summary(args: argparse.Namespace, load_config: Loader) -> str:
    """The lines `make demo` ends with (the CLI prints them to stdout): the submission, the
    report and the OOF score of the ensemble submitted, the last pseudo-label round's (beside
    round 1's when there are rounds)."""
    import json

    if args.results is None:
        config = load_config(args)
        layout, last = Layout(str(config.results)), last_round(config.raw)
    else:  # no config: the last round whose ensemble is in the folder
        layout, last = Layout(str(args.results)), 1
        while Path(layout.round(last + 1).metrics()).is_file():
            last += 1

    def scores(number: int) -> dict:
        path = Path(layout.round(number).metrics())
        if not path.is_file():
            raise MaskpipeError(f"{path}: no finished run here yet")
        return json.loads(path.read_text())

    metrics = scores(last)
    which = f" of round {last}, the last pseudo-label round," if last != 1 else ""
    line = (f"ensemble{which} out-of-fold macro F1: {metrics['oof_macro_f1']:.4f} "
            f"(accuracy {metrics['oof_accuracy']:.4f})")
    if last != 1:
        line += f"; round 1: {scores(1)['oof_macro_f1']:.4f}"
    return (f"submission: {layout.submission()}\n"
            f"report:     {layout.report()}\n"
            f"{line}")
