"""Quality on real faces: the pipeline run for a fixed list of configurations, side by side.

    python bench/quality.py --faces ../shared/realfaces/utkface --persons 600 --eval-persons 300

Generates (or reuses) a realistic set with ``maskpipe demo-data --faces`` (real UTKFace faces
with drawn masks, in the competition's layout; eval made of persons, ``demo_truth.csv`` holds
their true classes), then runs the pipeline's steps in-process (:mod:`maskpipe.dag.runner`) for
every row of :data:`ROWS`, with the files the engines would pass (from the step table,
:func:`maskpipe.dag.jobs.resolve`; each file in the folder :data:`FOLDER` names for its kind), and
prints one table: out-of-fold macro F1, eval macro F1 against ``demo_truth.csv`` (what a
leaderboard would give), eval F1 per task, how the train and eval photos were cropped, and the
row's wall time.

Work is shared where the config is the same: one crop run for all rows, and each model x fold is
trained once and reused by every row whose model has the same config (the "no TTA" row only
predicts again; the ensemble row reuses the 18-class model). A row's time counts only what it ran
itself; ``reused`` says which rows trained nothing.

Noise is printed beside every figure: each row's eval macro F1 has a 95% bootstrap interval over
eval persons, each eval-only option (persons grouping, prior correction) and each claimed gain
between rows (:data:`GAINS`) a paired one, called real only where it excludes 0. An interval over
eval persons is not the whole noise: ``--data-seed`` draws other faces, ``--seed`` trains again.

``--regime pretrained`` (the default) starts every model from the ImageNet weights that pip
packages ship (:data:`maskpipe.train.weights.PACKAGED`; offline), as the competition's teams
fine-tuned pretrained backbones; ``--regime scratch`` trains small models from scratch (resnet10t at
48 px), the twin the pretrained weights are measured against. Sizes (persons, folds, epochs, image size) are arguments and the same for every row;
the defaults are sized for the whole table in about 90 minutes on 2 cores (docs/quality.md
says what was measured at which size). Seeded and repeatable on CPU.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from sklearn.metrics import confusion_matrix, recall_score

from maskpipe.classes import AGE_NAMES, decode
from maskpipe.cli import main as cli_main
from maskpipe.config import validate
from maskpipe.layout import Layout
from maskpipe.metrics import macro_f1, person_interval, task_f1
from maskpipe.dag.jobs import resolve
from maskpipe.dag.ports import Job, Port, switched_on
from maskpipe.dag.runner import run_job
from maskpipe.dag.table import STEPS
from maskpipe.demo.realfaces import EXTERNAL_DIR
from maskpipe.train.weights import PACKAGED, packaged_hint

REPO = Path(__file__).resolve().parents[1]
OLD = AGE_NAMES.index(">=60")  #: the ">= 60" age group
log = logging.getLogger("bench.quality")


@dataclass(frozen=True)
class Row:
    """One configuration: its models (name -> overrides of the base model) and section overrides."""

    name: str
    models: dict
    sections: dict = field(default_factory=dict)


#: The fixed list of configurations. "a" is the base model (``--arch``), "b" the second
#: architecture (``--arch-b``).
ROWS = [
    Row("18-class model (TTA hflip)", {"a": {}}),
    Row("18-class model, no TTA", {"a": {}}, {"predict": {"tta": {"hflip": False}}}),
    Row("multitask head", {"mt": {"head": "multitask"}}),
    Row("three task models", {"mask": {"head": "mask"}, "gender": {"head": "gender"}, "age": {"head": "age"}}),
    Row("ensemble of two architectures", {"a": {}, "b": {"arch": "@arch_b"}}),
    Row("18-class, train_age_bounds [30, 58]", {"a": {}}, {"labels": {"train_age_bounds": [30, 58]}}),
    Row("18-class, pseudo-label round 2", {"a": {}}, {"pseudo": {"rounds": 1}}),
    Row("18-class, best config of the search", {"a": "@searched"}),
    Row("18-class, pseudo-label round 2 at threshold 0.5", {"a": {}}, {"pseudo": {"rounds": 1, "threshold": 0.5}}),
    Row("18-class, from scratch (the scratch regime's row 1)", {"a": "@scratch"}),
    # Ages the train set never shows: the set's unused faces (demo-data's OUT/external, 514 of
    # 2,142 aged 60 or more where every train ">= 60" person is 60-65) for the gender and age
    # tasks only (all "not wear", they would teach the mask task nothing true), and dlib's
    # pretrained age and gender networks as an ensemble vote. On the multitask row: an 18-class
    # head cannot take some tasks only.
    Row("multitask, external faces (gender, age)",
        {"mt": {"head": "multitask", "external_tasks": ["gender", "age"]}}, {"external": {"folders": ["@external"]}}),
    Row("multitask, teacher vote", {"mt": {"head": "multitask"}}, {"teacher": {"enabled": True}}),
    Row("multitask, external faces + teacher vote",
        {"mt": {"head": "multitask", "external_tasks": ["gender", "age"]}},
        {"external": {"folders": ["@external"]}, "teacher": {"enabled": True}}),
]
#: The rows a regime runs by default: the from-scratch twin (row 10) only measures the
#: pretrained regime against its own row 1 (in the scratch regime it would be row 1 again).
SCRATCH_TWIN = 10
DEFAULT_ROWS = {"pretrained": list(range(1, len(ROWS) + 1)),
                "scratch": [n for n in range(1, len(ROWS) + 1) if n != SCRATCH_TWIN]}

#: What the bench's search varies: config.yaml's ``search.space`` without image size and epochs,
#: so every trial has the training budget of the rows (``--epochs``, ``--image-size``).
FIXED_BUDGET = ("image_size", "epochs")


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


#: The regimes the table is measured in, each a set of defaults for the options of the same
#: name. "pretrained": ImageNet weights that pip packages ship (offline), fine-tuned whole, as
#: every competition team did: at the crops' own 96 x 80 (the backbone learnt its filters at
#: 224 px; at 64 px a face's last feature map is 2 x 2), lr 1e-3 without a warm-up epoch (the
#: new head starts at zero). Measured on row 1 (docs/quality.md): the learning rate was the
#: lever, 0.49 eval macro F1 at 1e-3 against 0.22 at 3e-4 and 0.35 with two frozen-backbone
#: epochs first. Four search trials keep the table near 90 minutes on 2 quiet cores (a lite0
#: model x fold trains at ~55 img/s there, against ~240 for resnet10t at 48 px).
#: "scratch": small models trained from scratch, the twin that shows what pretrained weights add.
REGIMES = {
    "pretrained": {"arch": "tf_efficientnet_lite0", "arch_b": "mobilenetv2_100", "image_size": [96, 80],
                   "epochs": 4, "search_trials": 4,
                   "set": ["optimizer.lr=1e-3", "scheduler.warmup_epochs=0"]},
    "scratch": {"arch": "resnet10t", "arch_b": "mobilenetv3_small_100", "image_size": [48],
                "epochs": 6, "search_trials": 8, "set": []},
}


def _set(model: dict, assignment: str) -> dict:
    """``model`` with ``KEY.SUB=VALUE`` applied (VALUE read as YAML)."""
    key, sep, value = assignment.partition("=")
    if not sep:
        raise SystemExit(f"bench/quality.py: --set {assignment!r}: expected KEY=VALUE (e.g. optimizer.lr=3e-4)")
    over: dict = {}
    node = over
    *parents, leaf = key.split(".")
    for k in parents:
        node = node.setdefault(k, {})
    node[leaf] = yaml.safe_load(value)
    if isinstance(node[leaf], str):  # PyYAML (YAML 1.1) reads 3e-4 as a string: no dot
        try:
            node[leaf] = float(node[leaf])
        except ValueError:
            pass
    return _merge(model, over)


def packaged_weights(arch: str, where: str) -> str:
    """The config value of the ImageNet weights a pip package ships for ``arch``."""
    for known in PACKAGED.values():
        if arch in known.archs:
            return known.value
    raise SystemExit(f"bench/quality.py: {where}: no packaged weights; {packaged_hint(arch)}")


def model_weights(arch: str, regime: str) -> dict:
    """The model keys that say where ``arch`` starts from in ``regime``."""
    if regime == "scratch":
        return {"pretrained": False, "pretrained_file": None}
    return {"pretrained": True, "pretrained_file": packaged_weights(arch, where=f"bench --arch {arch}")}


def base_config(data: Path, args: argparse.Namespace) -> dict:
    """The shipped config.yaml at the bench's sizes (CPU-friendly), for ``data``."""
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["data"]["root"] = str(data)
    cfg["folds"]["k"] = args.folds
    cfg["train"]["seed"] = args.seed
    cfg["train"]["num_workers"] = 0
    base = next(iter(cfg["models"].values()))
    size = list(args.image_size) * (2 if len(args.image_size) == 1 else 1)
    model = {**base, "arch": args.arch, **model_weights(args.arch, args.regime), "image_size": size,
             "epochs": args.epochs}
    for assignment in args.set:
        model = _set(model, assignment)
    cfg["models"] = {"base": model}
    return cfg


def scratch_twin(base: dict, args: argparse.Namespace) -> dict:
    """The model row 1 has in the scratch regime (its sizes, none of ``--set``): trained once and
    shared with a scratch run of the same set, folds and seed."""
    twin = argparse.Namespace(**{**vars(args), **REGIMES["scratch"], "regime": "scratch"})
    return base_config(Path(base["data"]["root"]), twin)["models"]["base"]


def row_config(base: dict, row: Row, args: argparse.Namespace, searched: dict | None = None) -> dict:
    """``row``'s config: ``@arch_b`` is the second architecture, ``@searched`` the search's best
    model, ``@scratch`` row 1's model in the scratch regime, ``@external`` the set's unused faces."""
    cfg = _merge(base, row.sections)
    external = str(Path(base["data"]["root"]) / EXTERNAL_DIR)
    cfg["external"] = {**cfg.get("external", {}), "folders": [
        external if f == "@external" else f for f in cfg.get("external", {}).get("folders", [])]}
    model = base["models"]["base"]
    second = {"arch": args.arch_b, **model_weights(args.arch_b, args.regime)}
    special = {"@searched": lambda: searched, "@scratch": lambda: scratch_twin(base, args)}
    cfg["models"] = {m: (special[o]() if isinstance(o, str) else
                         _merge(model, second if o.get("arch") == "@arch_b" else o))
                     for m, o in row.models.items()}
    return validate(cfg, f"bench row {row.name!r}")


def search_best(runner: Runner, base: dict, args: argparse.Namespace) -> dict:
    """Run ``maskpipe search`` (its Python entry point) on the first row's model, on every fold (a
    winner picked on one fold's noisy score did not carry over), with the rows' training budget;
    returns the best trial's model config."""
    from maskpipe.search import run_search

    cfg = row_config(base, ROWS[0], args)
    at = runner.prepare(cfg)
    C, F = at["crops"], at["labels"]
    folder = (args.work / "search").resolve()
    results = folder / "results"  # what the search reads, where its Layout looks for it
    for name, target in (("manifest", C.manifest("train")), ("crops", C.crops("train")),
                         ("labels", F.labels()), ("folds", F.folds())):
        link = results / name
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(Path(target).resolve().parent, target_is_directory=True)
    space = {k: v for k, v in base["search"]["space"].items() if k not in FIXED_BUDGET}
    cfg = validate({**cfg, "results": str(results), "search": {
        **base["search"], "model": "a", "trials": args.search_trials, "folds": list(range(args.folds)), "seed": args.seed,
        "parallel": 1, "space": space}}, "bench search")
    summary = run_search([runner._config(cfg, "search")], folder=folder)
    log.warning("search: %d trials, best out-of-fold macro F1 on every fold %.4f with %s",
                summary.completed, summary.best_score, summary.best_params)
    print(summary.table.to_markdown(index=False, floatfmt=".3g"), flush=True)  # lr 1e-3, weight decay 1e-5
    return summary.best_model


#: The folder of each kind of file (the step table's Layout method, or method:first argument
#: where one method serves two kinds) the rows' steps use: "crops" (shared by the rows with the
#: same data and crop config), "labels" (and the same labels and folds config), "external" (the
#: external faces, by the same and the external config), "teacher" (the teacher's estimates, by
#: the crops and the teacher config), "models" (and the same train and model config), "cache"
#: (every row), "row" (a row's predictions and pseudo-labels), "ensemble" (one per eval variant).
#: A step's log goes in the folder of its first output.
FOLDER = {**dict.fromkeys(("manifest", "crops", "crop_index", "crop_sheet", "persons_groups"), "crops"),
          "crop_cache": "cache", "file:cache": "cache", "teacher_cache": "cache",
          **dict.fromkeys(("labels", "corrections_applied", "folds"), "labels"),
          **dict.fromkeys(("crops:external", "crop_index:external", "file:labels"), "external"),
          "teacher_estimates": "teacher",
          **dict.fromkeys(("checkpoint", "train_metrics", "tensorboard", "resume"), "models"),
          **dict.fromkeys(("oof", "test_probs", "pseudo_labels", "pseudo_summary"), "row"),
          **dict.fromkeys(("ensemble_oof", "ensemble_test", "ensemble_scores", "metrics", "submission"),
                          "ensemble")}


#: The steps :class:`Runner` runs (each of their ports has a :data:`FOLDER` kind).
RUNS = ("validate", "crop", "persons", "labels", "folds", "external", "teacher", "train", "predict",
        "ensemble", "submit", "pseudo", "retrain", "repredict")


def folder_kind(port: Port) -> str:
    """The :data:`FOLDER` kind of ``port``: by its Layout method and first argument where FOLDER
    names the pair (the external faces' crops are ``crops("external")``), else by the method."""
    pair = f"{port.layout}:{port.args[0]}" if port.args else None
    return FOLDER[pair if pair in FOLDER else port.layout]


def _run(*args: str) -> None:
    if cli_main([str(a) for a in args]) != 0:
        raise SystemExit(f"bench/quality.py: maskpipe {args[0]} failed")


class Runner:
    """Runs the steps of each row under ``work``, sharing what has the same config."""

    def __init__(self, work: Path, data: Path):
        self.work, self.data = work, data
        self.truth = eval_truth(data)  #: what every row is scored against, read once

    def _config(self, cfg: dict, name: str) -> str:
        path = self.work / "configs" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return str(path)

    @staticmethod
    def job(step: str, cfg: dict, at: dict[str, Layout], **job) -> Job:
        """One job of ``step`` (``job``: its model, fold, round) with its files, from the step
        table, in the folders ``at`` gives each kind of :data:`FOLDER`."""
        if step not in RUNS:
            raise ValueError(f"bench/quality.py: step {step!r} is not in RUNS (give its files a FOLDER kind)")
        s = STEPS[step]

        def root(port: Port | None) -> str:
            if port is not None and not switched_on(cfg, port.when):
                return ""  # a port the config leaves out has no path (and maybe no folder here)
            return at[folder_kind(port or s.outputs[0])].results

        return resolve(s, cfg, root=root, **job)

    def run(self, step: str, cfg: dict, config: str, at: dict[str, Layout], **job) -> None:
        """One job of ``step`` as the engines would run it (:meth:`job`), with ``config``."""
        run_job(self.job(step, cfg, at, **job), [config])

    def prepare(self, cfg: dict) -> dict[str, Layout]:
        """validate + crop (per crop config), labels + folds (per labels/folds config), the
        external faces and the teacher where the config has them; the folders by kind."""
        # The set's marker too: a set made again in the same folder (a new generator version,
        # other demo-data options) holds other photos, whose crops must not be reused.
        marker = Path(cfg["data"]["root"]) / "demo.json"
        crop_key = _key(cfg["data"], cfg["crop"], marker.read_text() if marker.is_file() else "")
        C = Layout(str(self.work / "crops" / crop_key))
        c = self._config(cfg, f"crop-{crop_key}")
        at = {"crops": C, "cache": Layout(str(self.work))}  # the detection cache: work/cache/boxes
        if not Path(C.crop_index("eval")).is_file():
            self.run("validate", cfg, c, at)
            self.run("crop", cfg, c, at)
        if not Path(C.persons_groups()).is_file():  # eval persons: read by the ensemble step
            self.run("persons", cfg, c, at)
        lab_key = _key(crop_key, cfg["labels"], cfg["folds"])
        F = Layout(str(self.work / "labels" / lab_key))
        c = self._config(cfg, f"labels-{lab_key}")
        if not Path(F.folds()).is_file():
            self.run("labels", cfg, c, {"crops": C, "labels": F})
            self.run("folds", cfg, c, {"labels": F})
        at["labels"] = F
        for step, section in (("external", ("external", "crop", "labels")), ("teacher", ("teacher",))):
            if STEPS[step].active(cfg):  # its own folder: rows without it share the crops above
                at[step] = X = Layout(str(self.work / step / _key(crop_key, *(cfg[k] for k in section))))
                if not all(Path(out).exists() for out in self.job(step, cfg, at).outputs.values()):
                    self.run(step, cfg, self._config(cfg, f"{step}-{Path(X.results).name}"), at)
        return at

    def model(self, cfg: dict, m: str, at: dict[str, Layout], folds: int) -> tuple[Layout, bool]:
        """Train model ``m`` on every fold unless a model of the same config was: (layout, trained)."""
        # the external faces (their folder names their config) only for a model that takes them
        external = [at["external"].results] if "external" in at else []
        T = Layout(str(self.work / "models" / _key(str(at["labels"].folds()), cfg["train"], cfg["models"][m],
                                                   *external)))
        c = self._config(cfg, f"train-{Path(T.results).name}")
        trained = False
        for f in range(folds):
            if Path(T.train_metrics(m, f)).is_file():
                continue
            self.run("train", cfg, c, {**at, "models": T}, model=m, fold=f)
            trained = True
        return T, trained

    def ensemble(self, cfg: dict, c: str, at: dict[str, Layout], P: Layout, V: Layout) -> None:
        """The ensemble of every model x fold's predictions in ``P``, and its submission, in ``V``."""
        at = {**at, "row": P, "ensemble": V}
        self.run("ensemble", cfg, c, at)
        # submit reads the config's last round (round="last"); here, the ensemble just made
        self.run("submit", {**cfg, "pseudo": {**cfg["pseudo"], "rounds": 0}}, c, at)

    def next_round(self, cfg: dict, c: str, at: dict[str, Layout], R: Layout, r: int, folds: int) -> None:
        """Pseudo-label round ``r``: label the eval photos round ``r - 1``'s ensemble is sure of,
        train every model x fold again with them, predict; files under ``R.round(r)``."""
        self.run("pseudo", cfg, c, {"ensemble": R, "row": R}, round=r)
        at = {**at, "models": R, "row": R}  # the round's models are the row's
        for m in cfg["models"]:
            for f in range(folds):
                self.run("retrain", cfg, c, at, model=m, fold=f, round=r)
                self.run("repredict", cfg, c, at, model=m, fold=f, round=r)

    def row(self, row: Row, cfg: dict, folds: int) -> dict:
        """Every step of one row (and its pseudo-label rounds); returns the row's figures, those
        of its last round."""
        start = time.perf_counter()
        at = self.prepare(cfg)
        R = row_layout(self.work, row, cfg)
        c = self._config(cfg, f"row-{Path(R.results).name}")
        trained = False
        for m in cfg["models"]:
            T, new = self.model(cfg, m, at, folds)
            trained |= new
            for f in range(folds):
                self.run("predict", cfg, c, {**at, "models": T, "row": R}, model=m, fold=f)
        last, extra = R, {}
        for r in range(2, cfg["pseudo"]["rounds"] + 2):
            self.ensemble(cfg, c, at, last, last)  # what the round's pseudo-labels come from
            extra[f"round {r - 1} eval F1"] = scores(last, submitted(last), self.truth)["eval F1"]
            self.next_round(cfg, c, at, R, r, folds)
            last = R.round(r)
            extra[f"round {r} pseudo-labels"] = pseudo_quality(last, self.truth)
            trained = True
        figures = {}
        for variant, over in EVAL_VARIANTS.items():
            V = last if not over else Layout(str(Path(last.results) / variant))
            cv = _merge(cfg, {"ensemble": over})
            self.ensemble(cv, self._config(cv, f"row-{Path(R.results).name}-{variant or 'base'}"),
                          at, last, V)
            pred = submitted(V)
            figures[variant] = (scores(V, pred, self.truth), pred)
        seconds = time.perf_counter() - start
        return {"configuration": row.name, **figures[""][0],
                "eval F1 95%": "[{:.3f}, {:.3f}]".format(*interval(self.truth, figures[""][1])),
                **variant_columns(figures, self.truth),
                **crop_shares(at["crops"]), "wall s": round(seconds), "reused": "" if trained else "yes",
                "notes": ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                   for k, v in extra.items()),
                "_pred": figures[""][1]}


def row_layout(work: Path, row: Row, cfg: dict) -> Layout:
    """Where ``row`` run with ``cfg`` keeps its predictions: by its config, not its name, so a row
    run in another regime, at other sizes or with another seed keeps its own beside this one's."""
    return Layout(str(work / "rows" / _key(row.name, cfg)))


def final_round(R: Layout, cfg: dict) -> Layout:
    """The row's last pseudo-label round (``R`` itself without rounds): what it submits."""
    return R.round(cfg["pseudo"]["rounds"] + 1)


def against_seed(rows: dict[int, dict], base: dict, args: argparse.Namespace, truth: pd.DataFrame) -> pd.DataFrame:
    """Each row against the same row trained with seed ``--against-seed`` (its predictions in
    ``--against-work``, found by its config): both eval macro F1 and their paired difference. The
    search row is left out (its config is the other run's search's winner)."""
    other = base_config(Path(base["data"]["root"]), argparse.Namespace(**{**vars(args), "seed": args.against_seed}))
    out = []
    for n, r in rows.items():
        row = ROWS[n - 1]
        if "@searched" in row.models.values():
            continue
        cfg = row_config(other, row, args)
        sub = final_round(row_layout(args.against_work, row, cfg), cfg)
        if not Path(sub.submission()).is_file():
            log.warning("row %d with seed %d: no %s", n, args.against_seed, sub.submission())
            continue
        theirs = submitted(sub)
        theirs_f1 = scores(sub, theirs, truth)["eval F1"]
        lo, hi = interval(truth, r["_pred"], theirs)
        out.append({"#": n, "configuration": r["configuration"], f"seed {args.against_seed}": f"{theirs_f1:.3f}",
                    f"seed {args.seed}": f"{r['eval F1']:.3f}", "difference": f"{r['eval F1'] - theirs_f1:+.3f}",
                    "95% interval": f"[{lo:+.3f}, {hi:+.3f}]", "beyond noise": "yes" if _real(lo, hi) else "no"})
    return pd.DataFrame(out)


#: The eval-only ensemble options (docs/persons.md) each row is also
#: scored with: the row's own ensemble ("", options off as in config.yaml), then persons grouping
#: (pool + mask assignment), the prior correction, and both. Training and prediction are shared.
EVAL_VARIANTS = {
    "": {},
    "persons": {"persons": {"pool": True, "assign_masks": True}},
    "prior": {"prior_shift": True},
    "both": {"persons": {"pool": True, "assign_masks": True}, "prior_shift": True},
}


def variant_columns(figures: dict, truth: pd.DataFrame) -> dict:
    """Per eval variant: its eval macro F1 minus the row's with the 95% interval of that paired
    difference over eval persons (``*`` where it excludes 0: a real change), and how many eval
    predictions differ.

    ``figures``: variant -> (scores, submitted classes by ImageID).
    """
    base, base_pred = figures[""]
    out = {}
    for v, (f, pred) in figures.items():
        if v:
            lo, hi = interval(truth, pred, base_pred)
            changed = int((pred != base_pred.loc[pred.index]).sum())
            out[f"{v} ±F1 [95%] (changed)"] = (f"{f['eval F1'] - base['eval F1']:+.3f} "
                                                f"[{lo:+.3f},{hi:+.3f}]{_real(lo, hi)} ({changed})")
    return out


def _real(lo: float, hi: float) -> str:
    return "*" if lo > 0 or hi < 0 else ""


def submitted(R: Layout) -> pd.Series:
    """The classes ``R``'s submission gives, by ImageID."""
    return pd.read_csv(R.submission(), dtype={"ImageID": str}).set_index("ImageID")["ans"]


def eval_truth(data: Path) -> pd.DataFrame:
    """``demo_truth.csv``: each eval photo's class (``ans``) and person, by ImageID."""
    return pd.read_csv(data / "demo_truth.csv", dtype={"ImageID": str}).set_index("ImageID")


def interval(truth: pd.DataFrame, pred: pd.Series, baseline: pd.Series | None = None) -> tuple[float, float]:
    """95% bootstrap interval over eval persons of the eval macro F1 of ``pred`` (by ImageID), or
    of its paired difference from ``baseline``'s."""
    t = truth.loc[pred.index]
    base = None if baseline is None else baseline.loc[pred.index].to_numpy()
    return person_interval(t["ans"].to_numpy(), pred.to_numpy(), t["person"].to_numpy(), base)


#: The gains the table claims, each a row against the row it changes one thing of (1-based):
#: (what, row, against).
GAINS = [
    ("TTA (hflip)", 1, 2),
    ("multitask head", 3, 1),
    ("three task models", 4, 1),
    ("ensemble of two architectures", 5, 1),
    ("train_age_bounds [30, 58]", 6, 1),
    ("pseudo-label round 2", 7, 1),
    ("search's best config", 8, 1),
    ("pseudo-label round 2 at threshold 0.5", 9, 1),
    ("pretrained weights (over the from-scratch twin)", 1, SCRATCH_TWIN),
    ("external faces (gender, age)", 11, 3),
    ("teacher vote", 12, 3),
    ("external faces + teacher vote", 13, 3),
]


def gains(rows: dict[int, dict], truth: pd.DataFrame) -> pd.DataFrame:
    """The paired eval macro F1 gains of :data:`GAINS` among the rows that ran (by number)."""
    out = []
    for what, a, b in GAINS:
        if a in rows and b in rows:
            lo, hi = interval(truth, rows[a]["_pred"], rows[b]["_pred"])
            out.append({"gain": what, "rows": f"{a} vs {b}",
                        "eval F1 gain": rows[a]["eval F1"] - rows[b]["eval F1"],
                        "95% interval": f"[{lo:+.3f}, {hi:+.3f}]", "real": "yes" if _real(lo, hi) else "no"})
    return pd.DataFrame(out)


def age_errors(rows: dict[int, dict], truth: pd.DataFrame) -> pd.DataFrame:
    """Each row's eval age errors: photos of each true age group predicted as another (the
    off-diagonal of the 3 x 3 age confusion), where the age F1 is lost."""
    out = []
    for n, r in rows.items():
        pred = r["_pred"]
        cm = confusion_matrix(decode(truth.loc[pred.index, "ans"].to_numpy(int))[2],
                              decode(pred.to_numpy(int))[2], labels=range(len(AGE_NAMES)))
        out.append({"#": n, **{f"{t} as {p}": int(cm[i, j]) for i, t in enumerate(AGE_NAMES)
                                for j, p in enumerate(AGE_NAMES) if i != j}})
    return pd.DataFrame(out)


def scores(R: Layout, pred: pd.Series, truth: pd.DataFrame) -> dict:
    """OOF macro F1 (``R``'s ensemble metrics), and of ``pred`` (its submission, by ImageID) the
    eval macro F1, per-task F1 and the ">= 60" age group's recall (the group the train set barely
    shows) against ``truth`` (demo_truth.csv)."""
    metrics = json.loads(Path(R.metrics()).read_text())
    y, p = truth.loc[pred.index, "ans"].to_numpy(int), pred.to_numpy(int)
    tasks = task_f1(y, p)
    old_recall = recall_score(decode(y)[2], decode(p)[2], labels=[OLD], average=None, zero_division=np.nan)
    return {"OOF F1": metrics["oof_macro_f1"], "eval F1": macro_f1(y, p),
            **{f"eval {t}": v for t, v in tasks.items()}, "eval >=60 recall": float(old_recall[0])}


def pseudo_quality(N: Layout, truth: pd.DataFrame) -> str:
    """How many eval photos round ``N`` pseudo-labelled, and the share whose label is right."""
    chosen = pd.read_csv(N.pseudo_labels(), usecols=["key", "label"], dtype={"key": str})
    right = (truth.loc[chosen["key"], "ans"].to_numpy() == chosen["label"].to_numpy()).mean() if len(chosen) else 0.0
    return f"{len(chosen)} ({100 * right:.0f}% right)"


def crop_shares(C: Layout) -> dict:
    """Share of train and eval crops detected (either pass) / from person or shoot / fixed."""
    out = {}
    for split in ("train", "eval"):
        src = pd.read_csv(C.crop_index(split), usecols=["source"])["source"]
        out[f"{split} det/grp/fix"] = "/".join(
            f"{100 * v:.0f}" for v in (src.isin(["detected", "second_pass"]).mean(),
                                       src.isin(["person", "shoot"]).mean(), (src == "fallback").mean()))
    return out


def make_data(args: argparse.Namespace) -> Path:
    """The realistic set (``demo-data --faces``), generated unless it is already there."""
    min_age = "" if args.min_age is None else f"-min{args.min_age}"  # another set: another folder
    data = args.data or args.work / f"data-{args.persons}-{args.eval_persons}-s{args.data_seed}{min_age}"
    _run("demo-data", "--faces", args.faces, "--out", data, "--persons", args.persons,
         "--eval-persons", args.eval_persons, "--seed", args.data_seed,
         *(["--landmark-cache", args.landmark_cache] if args.landmark_cache else []),
         *(["--min-age", args.min_age] if args.min_age is not None else []))
    return data


class _Help(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """--help keeps the docstring's layout and shows every option's default (an option whose
    default is None says in its help what it defaults to)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default is None else super()._get_help_string(action)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=_Help, epilog="regimes:\n" + "\n".join(
        f"  {name}: " + ", ".join(f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                                  for k, v in sizes.items() if v) for name, sizes in REGIMES.items()))
    p.add_argument("--faces", type=Path, default=REPO.parent / "shared" / "realfaces" / "utkface",
                   help="labels.csv + face photos: the shared UTKFace folder beside the repo")
    p.add_argument("--data", type=Path,
                   help="the generated set's folder (default: WORK/data-PERSONS-EVAL_PERSONS-sSEED)")
    p.add_argument("--work", type=Path, default=Path("results/quality"), help="outputs of every row")
    p.add_argument("--landmark-cache", type=Path,
                   help="demo-data's landmark cache, kept between runs (default: beside the set)")
    p.add_argument("--min-age", type=int,
                   help="demo-data's youngest face (default: demo-data's, 18); 15 gives larger sets")
    p.add_argument("--persons", type=int, default=600, help="train persons (7 photos each)")
    p.add_argument("--eval-persons", type=int, default=300, help="eval persons (7 photos each)")
    p.add_argument("--regime", choices=sorted(REGIMES), default="pretrained",
                   help="pretrained: every model starts from the ImageNet weights a pip package ships "
                        "(offline); scratch: small models trained from scratch (resnet10t, 48 px). Sets the "
                        "defaults of --arch, --arch-b, --image-size, --epochs, --search-trials and --set")
    p.add_argument("--folds", type=int, default=2, help="folds of every row (folds.k): each model is trained k times")
    p.add_argument("--epochs", type=int,
                   help="training epochs of every model and search trial (default: the regime's)")
    p.add_argument("--image-size", type=int, nargs="+", metavar="PX",
                   help="training input: one side (square) or height width (default: the regime's)")
    p.add_argument("--arch", help="timm architecture of every row's models (default: the regime's)")
    p.add_argument("--arch-b", help="the ensemble's second architecture (default: the regime's)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="a model key of every row, dotted, value in YAML (e.g. optimizer.lr=1e-3, "
                        "freeze_backbone_epochs=1); repeat it; after the regime's own")
    p.add_argument("--seed", type=int, default=0, help="seed of training (and of the data set unless --data-seed)")
    p.add_argument("--data-seed", type=int, help="seed of the data set: another draw of faces (default: --seed)")
    p.add_argument("--rows", help="comma-separated row numbers (the table's #, 1-based) to run (default: all; "
                        "the scratch regime leaves out row 10, its own row 1 again)")
    p.add_argument("--against-seed", type=int,
                   help="also print each row against the same row trained with this seed (run before, its "
                        "predictions in --against-work): how far a second training seed moves it")
    p.add_argument("--against-work", type=Path, help="where --against-seed's rows are (default: --work)")
    p.add_argument("--search-trials", type=int,
                   help="trials of the search whose best config is the search row (scored on every "
                        "fold; default: the regime's)")
    args = p.parse_args(argv)
    for key, value in REGIMES[args.regime].items():
        if key != "set" and getattr(args, key) is None:
            setattr(args, key, value)
    args.set = [*REGIMES[args.regime]["set"], *(args.set or [])]  # the user's come last and win
    if args.data_seed is None:
        args.data_seed = args.seed
    if args.against_work is None:
        args.against_work = args.work
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not (args.faces / "labels.csv").is_file():
        raise SystemExit(f"bench/quality.py: {args.faces}/labels.csv not found (the real faces folder)")
    total = time.perf_counter()
    data = make_data(args)
    base = base_config(data, args)
    runner = Runner(args.work, data)
    numbers = [int(i) for i in args.rows.split(",")] if args.rows else DEFAULT_ROWS[args.regime]
    chosen = [ROWS[i - 1] for i in numbers]
    searched = (search_best(runner, base, args) if any("@searched" in r.models.values() for r in chosen)
                else None)
    rows = {}
    for number, row in zip(numbers, chosen, strict=True):
        rows[number] = runner.row(row, row_config(base, row, args, searched), args.folds)
        print(f"done: {({k: v for k, v in rows[number].items() if k != '_pred'})}", flush=True)
    table = pd.DataFrame([{"#": n, **{k: v for k, v in r.items() if k != "_pred"}} for n, r in rows.items()])
    print(f"\nQuality on real faces: {args.persons} train persons, {args.eval_persons} eval persons, "
          f"{args.folds} folds, {args.epochs} epochs, {'x'.join(map(str, args.image_size))} px, "
          f"{args.arch} (+ {args.arch_b}), {args.regime}{''.join(f', {a}' for a in args.set)}, "
          f"data seed {args.data_seed}, training seed {args.seed}; "
          f"{time.perf_counter() - total:.0f} s in all")
    print(table.to_markdown(index=False, floatfmt=".3f"))
    paired = gains(rows, runner.truth)
    if len(paired):
        print("\nPaired eval macro F1 gains (95% bootstrap interval over eval persons; real where it excludes 0)")
        print(paired.to_markdown(index=False, floatfmt="+.3f"))
    if args.against_seed is not None:
        seeds = against_seed(rows, base, args, runner.truth)
        print(f"\nEval macro F1 against training seed {args.against_seed} ({args.against_work}; paired 95% "
              "interval over eval persons of the difference)")
        print(seeds.to_markdown(index=False, disable_numparse=True) if len(seeds) else "(none of the rows found)")
    print("\nEval age errors (photos of a true age group predicted as another)")
    print(age_errors(rows, runner.truth).to_markdown(index=False))
    return table


if __name__ == "__main__":
    main()
