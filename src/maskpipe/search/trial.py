"""One search trial: a model config trained and predicted by the pipeline's own steps, scored.

A trial runs the ``train`` and ``predict`` steps in this process (:mod:`maskpipe.dag.runner`)
with the files the engines would pass them (from the step table), reading the pipeline's crops, labels and
folds and writing below ``search/trials/<key>/`` (the step table's layout under that folder).
``<key>`` hashes the trial's model config, the ``train`` and ``predict`` sections, the folds and
the contents of every pipeline file trials read (train and eval crops and their indexes, labels,
folds; hashed once per search, :func:`inputs_digest`), so:

- a trial whose config was trained before is not trained again (its ``score.json`` is read);
- a fold whose ``metrics.json`` is there is not trained again, nor predicted again when its
  predictions are newer than its checkpoint;
- a trial killed mid-epoch resumes from the train step's ``resume.pt`` (``--resume``).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from maskpipe import config as mconfig
from maskpipe.classes import PROB_COLUMNS, TASK_COLUMNS, TASKS
from maskpipe.io import MaskpipeError, read_csv, sha256_file, write_bytes_if_changed, write_json
from maskpipe.layout import Layout
from maskpipe.dag.jobs import Job, resolve
from maskpipe.dag.ports import Port, Step
from maskpipe.dag.runner import run_job
from maskpipe.dag.table import STEPS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Setup:
    """What every trial of a search shares."""

    raw: dict  #: the validated config the search was started with
    config_files: tuple[str, ...]  #: its files, in order
    model: str  #: the model name the trials train under
    folds: tuple[int, ...]
    trials_dir: Path
    inputs: str  #: :func:`inputs_digest` of the pipeline's files, hashed once per search


@dataclass(frozen=True)
class Result:
    """A finished trial: its score, per-fold scores, seconds spent training it, its folder."""

    score: float
    per_fold: dict[str, float]
    seconds: float
    folder: Path
    cached: bool


def model_config(raw: dict, name: str, cfg: dict, where: str = "search") -> dict:
    """``cfg`` validated as ``models.NAME`` of ``raw``, with the schema's defaults filled."""
    trial = copy.deepcopy(raw)
    trial["models"] = {name: copy.deepcopy(cfg)}
    trial["ensemble"]["weights"] = {}  # may name the other models
    return mconfig.validate(trial, where)["models"][name]


def trial_key(setup: Setup, cfg: dict) -> str:
    """16 hex digits naming a trial: its config, the shared sections, folds and input files."""
    h = hashlib.sha256(json.dumps([setup.model, cfg, setup.raw["train"], setup.raw["predict"],
                                   list(setup.folds), setup.inputs], sort_keys=True).encode())
    return h.hexdigest()[:16]


def input_files(raw: dict) -> list[str]:
    """The pipeline's files every trial reads: the train and predict steps' shared inputs."""
    ports = [p for s in ("train", "predict") for p in STEPS[s].inputs if not p.per_job]
    return sorted({path for p in ports for path in p.paths(raw)})


def check_inputs(raw: dict) -> None:
    """Fail with one line when the pipeline has not made what trials read yet."""
    missing = [path for path in input_files(raw) if not Path(path).exists()]
    if missing:
        raise MaskpipeError(f"search: {missing[0]} is missing; run the pipeline's crop, labels and "
                            "folds steps first (e.g. `snakemake submission`)")


def inputs_digest(raw: dict) -> str:
    """SHA-256 of the contents of :func:`input_files`: a re-crop (or a relabel) that keeps the
    crop index byte-identical still names new trials. The crops can be GBs: once per search."""
    h = hashlib.sha256()
    for path in input_files(raw):  # contents only: a moved results folder keeps its trials
        h.update(sha256_file(path).encode())
    return h.hexdigest()


def run_trial(setup: Setup, cfg: dict) -> Result:
    """Train and predict ``cfg`` on the search's folds (what is done already is skipped); score it."""
    key = trial_key(setup, cfg)
    folder = setup.trials_dir / key
    score_file = folder / "score.json"
    if score_file.is_file():
        done = json.loads(score_file.read_text())
        log.info("trial %s: cached (macro F1 %.4f); nothing trained", key, done["score"])
        return Result(done["score"], done["per_fold"], done["seconds"], folder, cached=True)
    trial_file = folder / "config.yaml"
    # ensemble is replaced too: its weights may name models the trial's config drops
    ensemble = {**setup.raw["ensemble"], "weights": {}}
    text = yaml.safe_dump({"replace": ["models", "ensemble"], "models": {setup.model: cfg},
                           "ensemble": ensemble}, sort_keys=False)
    write_bytes_if_changed(trial_file, ("# one trial of `maskpipe search`\n" + text).encode())
    trial_raw = {**setup.raw, "results": str(folder), "models": {setup.model: cfg}}
    configs = [*setup.config_files, str(trial_file)]
    start = time.perf_counter()
    for fold in setup.folds:
        L = Layout(str(folder))
        if not Path(L.train_metrics(setup.model, fold)).is_file():
            run_trial_job(STEPS["train"], setup.raw, trial_raw, configs, setup.model, fold)
        oof, ckpt = Path(L.oof(setup.model, fold)), Path(L.checkpoint(setup.model, fold))
        if not (oof.is_file() and oof.stat().st_mtime >= ckpt.stat().st_mtime):
            run_trial_job(STEPS["predict"], setup.raw, trial_raw, configs, setup.model, fold)
    seconds = round(time.perf_counter() - start, 1)
    oofs = [Path(Layout(str(folder)).oof(setup.model, f)) for f in setup.folds]
    score, per_fold = oof_score(oofs, Path(Layout(str(setup.raw["results"])).labels()),
                                setup.raw["predict"]["tta"])
    write_json({"score": score, "per_fold": per_fold, "seconds": seconds, "key": key}, score_file)
    return Result(score, per_fold, seconds, folder, cached=False)


def oof_score(oof_paths: list[Path], labels: Path, tta: dict) -> tuple[float, dict[str, float]]:
    """Macro F1 of the OOF predictions (with the configured TTA) of the given folds, overall and
    per fold: 18-class for 18-class heads, the task's for a single-task model."""
    import pandas as pd

    # scikit-learn and torch (1.5 s and 5 s to import): only in the process that scores a trial
    from maskpipe.metrics import head_score
    from maskpipe.train.predict import tta_label

    lab = read_csv(labels, required=["key", "label"], dtype={"key": str}).set_index("key")
    oof = pd.concat([read_csv(p, required=["key", "fold", "head", "tta"], dtype={"key": str})
                     for p in oof_paths], ignore_index=True)
    oof = oof[oof["tta"] == tta_label(tta)]
    head = oof["head"].iloc[0]
    cols = TASK_COLUMNS[head] if head in TASKS else PROB_COLUMNS

    def f1(part: pd.DataFrame) -> float:
        return head_score(head, lab.loc[part["key"], "label"].to_numpy(), part[cols].to_numpy().argmax(1))[0]

    return f1(oof), {str(f): f1(part) for f, part in oof.groupby("fold")}


def trial_job(step: Step, raw: dict, trial_raw: dict, model: str, fold: int) -> Job:
    """The step's job as the engines would resolve it (:func:`maskpipe.dag.jobs.resolve`), but
    its shared inputs from the pipeline's results and the job's own files (outputs, options, its
    per-job inputs such as predict's checkpoint) and log under the trial's."""
    pipeline, trial = str(raw["results"]), str(trial_raw["results"])

    def root(port: Port | None) -> str:
        shared = port is not None and port in step.inputs and not port.per_job
        return pipeline if shared else trial

    return resolve(step, trial_raw, model, fold, root=root)


def run_trial_job(step: Step, raw: dict, trial_raw: dict, configs: list[str], model: str, fold: int) -> None:
    """Run one train or predict job of a trial in this process, as the engines would run it."""
    run_job(trial_job(step, raw, trial_raw, model, fold), configs)
