"""The pipeline as one table: every step's config sections, files, fan-out, resources and code.

Everything that wires a step is read from :data:`STEPS`: the ``maskpipe STEP`` options
(:mod:`maskpipe.cli`), the Snakemake rules' inputs, outputs, params and shell lines
(``workflow/rules/common.smk``), ``dvc.yaml`` (:mod:`maskpipe.dvcgen`), the sections a step may
read (:func:`maskpipe.config.step_params`), the code files whose edits rerun it
(:mod:`maskpipe.code`) and the tests' in-process pipeline runner. Adding a step is one entry here,
one function in :mod:`maskpipe.steps` and one rule in ``workflow/rules/``.

Paths are named by :class:`maskpipe.layout.Layout` methods, never spelled out here. A step that
fans out runs once per model x fold; its per-job files take the job's model and fold, and a later
step reads ``every_job`` inputs as one path per model x fold.

Pseudo-label rounds (the ``pseudo`` config section): a step marked ``rounds`` runs once per round
2 .. ``pseudo.rounds`` + 1 (round 1 is the plain pipeline) and, if it fans out, for the models
``pseudo.models`` selects. A port's ``round`` says which round's :meth:`Layout.round` folder it
lives in: see :data:`maskpipe.rounds.ROUND_KINDS`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from maskpipe.layout import Layout
from maskpipe.rounds import again, extra_rounds, retrained, round_layouts

#: Placeholders of a per-job path, filled with a model and a fold (or engine wildcards).
MODEL, FOLD = "{model}", "{fold}"
#: Placeholder of a pseudo-label round's number (2, 3, ...).
ROUND = "{round}"


@dataclass(frozen=True)
class Port:
    """One file (or folder) a step reads or writes, or a path option it is given.

    Exactly one of ``layout`` (a :class:`Layout` method, with ``args``) and ``config`` (a config
    key holding a path; ``under`` then names a path below it) says where it lives.
    """

    name: str  #: Snakemake's input/output/params name and the step's argument (``args.NAME``)
    help: str
    layout: str | None = None
    args: tuple[str, ...] = ()
    config: str | None = None
    under: str | None = None
    per_job: bool = False  #: the job's own model and fold fill the path
    every_job: bool = False  #: one path per model x fold of the config
    folder: bool = False
    cli: bool = True  #: passed to the command; False: only tracked by the engines
    dvc: str = "outs"  #: for outputs: the dvc.yaml list it goes in (outs, metrics, plots)
    round: str = ""  #: which pseudo-label round's files (:data:`maskpipe.rounds.ROUND_KINDS`)

    @property
    def many(self) -> bool:
        """A list of paths (one per model x fold or per round), not one path."""
        return self.every_job or self.round in ("rounds", "extra")

    def flag(self, output: bool = False) -> str:
        """The command line option: ``--NAME`` for inputs, ``--out-NAME`` for outputs."""
        return "--" + ("out-" if output else "") + self.name.replace("_", "-")

    def paths(self, raw: dict, model: str = MODEL, fold: str = FOLD,
              round: str | int = ROUND) -> list[str]:
        """Where this port lives for a config (and a job's round); empty when its config key is
        null, or for the rounds of a config without pseudo-label rounds."""
        if self.config is not None:
            node: Any = raw
            for part in self.config.split("."):
                node = node[part]
            if node is None:
                return []
            return [f"{str(node).rstrip('/')}/{self.under}" if self.under else str(node)]
        base = Layout(str(raw["results"]))
        out = []
        for layout in round_layouts(self.round, base, raw, round, self.name):
            if self.every_job:
                trained = retrained(raw)
                out += [getattr(layout if self.round != "this" or m in trained else base,
                                self.layout)(*self.args, m, f) for m, f in model_folds(raw)]
            else:
                method = getattr(layout, self.layout)
                out.append(method(*self.args, model, fold) if self.per_job else method(*self.args))
        return out


@dataclass(frozen=True)
class Step:
    """One pipeline step: a ``maskpipe`` subcommand, a Snakemake rule and a DVC stage."""

    name: str
    help: str
    sections: tuple[str, ...]  #: config sections it reads; ``{model}`` is the job's model
    inputs: tuple[Port, ...]
    outputs: tuple[Port, ...]
    modules: tuple[str, ...]  #: its code: these modules and what they import (maskpipe.code)
    options: tuple[Port, ...] = ()  #: paths the engines pass that are neither inputs nor outputs
    fan_out: bool = False  #: one job per model x fold
    local: bool = True  #: cheap: runs on the submitting machine under a cluster executor
    threads: int = 1
    gpu: bool = False
    function: str = ""  #: the function of maskpipe.steps it runs (default: the name)
    rounds: bool = False  #: once per pseudo-label round 2, 3, ... (its files: ``round="this"``)

    @property
    def runs(self) -> str:
        """The name of the function in :mod:`maskpipe.steps` that runs this step."""
        return self.function or self.name.replace("-", "_")


def _p(name: str, layout: str, *args: str, help: str, **kw: Any) -> Port:
    return Port(name, help, layout=layout, args=args, **kw)


def _data(name: str, under: str) -> Port:
    return Port(name, f"data.root/{under}", config="data.root", under=under, cli=False)


_TRAIN_CROPS = (_p("crops", "crops", "train", help="training crops (.npy)"),
                _p("crop_index", "crop_index", "train", help="training crop index (.csv)"))
_ROUND1: dict[str, Step] = {s.name: s for s in (
    Step("validate", "check the data layout; write the image manifests", ("data",),
         inputs=(_data("train_csv", "train/train.csv"), _data("train_images", "train/images"),
                 _data("eval_csv", "eval/info.csv"), _data("eval_images", "eval/images")),
         outputs=(_p("train", "manifest", "train", help="training manifest (.csv)"),
                  _p("eval", "manifest", "eval", help="eval manifest (.csv)")),
         modules=("maskpipe.data.manifest",), threads=2),
    Step("crop", "detect faces (MTCNN, batched) and store face crops", ("crop",),
         inputs=(_p("train_manifest", "manifest", "train", help="training manifest"),
                 _p("eval_manifest", "manifest", "eval", help="eval manifest")),
         outputs=(_p("train", "crops", "train", help="training crops (.npy)"),
                  _p("train_index", "crop_index", "train", help="training crop index (.csv)"),
                  _p("eval", "crops", "eval", help="eval crops (.npy)"),
                  _p("eval_index", "crop_index", "eval", help="eval crop index (.csv)"),
                  _p("sample_sheet", "crop_sheet", "sample", help="contact sheet of a random sample"),
                  _p("fallback_sheet", "crop_sheet", "fallbacks",
                     help="contact sheet of every crop without its own detection")),
         options=(Port("root", "data folder the manifest paths start from (default: data.root)",
                       config="data.root"),
                  _p("cache", "crop_cache", help="detection cache folder (default: cache/boxes under "
                                                 "results)")),
         modules=("maskpipe.crop.step",), local=False, threads=4, gpu=True),
    Step("persons", "group the eval photos into persons by shoot and face", ("persons",),
         inputs=(_p("eval_manifest", "manifest", "eval", help="eval manifest"),
                 _p("eval_crops", "crops", "eval", help="eval crops"),
                 # The photos themselves are read below the root option, not declared: the
                 # manifest holds each one's SHA-256, so an edited photo reruns this step anyway
                 # (and `snakemake --lint` refuses a param that prefixes an input).
                 _p("eval_index", "crop_index", "eval", help="eval crop index")),
         outputs=(_p("groups", "persons_groups",
                     help="per eval photo: its group, the group's size, a confidence (.csv)"),),
         options=(Port("root", "data folder the manifest paths start from (default: data.root)",
                       config="data.root"),),
         modules=("maskpipe.persons.step",)),
    Step("labels", "apply person-level label corrections", ("labels",),
         inputs=(_p("manifest", "manifest", "train", help="training manifest"),
                 Port("corrections", "labels.corrections", config="labels.corrections", cli=False)),
         outputs=(_p("labels", "labels", help="corrected labels (.csv)"),
                  _p("applied", "corrections_applied", help="the fixes applied (.csv)")),
         modules=("maskpipe.labels",)),
    Step("folds", "person-grouped, stratified K folds", ("folds",),
         inputs=(_p("labels", "labels", help="corrected labels"),),
         outputs=(_p("folds", "folds", help="person -> fold (.csv)"),),
         modules=("maskpipe.folds",)),
    Step("train", "train one model on one fold", ("train", "models.{model}"),
         inputs=(*_TRAIN_CROPS, _p("labels", "labels", help="corrected labels"),
                 _p("folds", "folds", help="person -> fold")),
         outputs=(_p("checkpoint", "checkpoint", per_job=True, help="best weights (.pt)"),
                  _p("metrics", "train_metrics", per_job=True, help="history and best epoch (.json)"),
                  _p("tensorboard", "tensorboard", per_job=True, folder=True,
                     help="TensorBoard log folder")),
         options=(_p("resume", "resume", per_job=True,
                     help="state after each epoch, for a killed job to resume from "
                          "(default: none, no resuming)"),),
         modules=("maskpipe.train.loop",), fan_out=True, local=False, threads=4, gpu=True),
    Step("predict", "out-of-fold and test probabilities with TTA", ("predict",),
         inputs=(_p("checkpoint", "checkpoint", per_job=True, help="the job's trained weights"),
                 _p("train_crops", "crops", "train", help="training crops"),
                 _p("train_index", "crop_index", "train", help="training crop index"),
                 _p("eval_crops", "crops", "eval", help="eval crops"),
                 _p("eval_index", "crop_index", "eval", help="eval crop index"),
                 _p("labels", "labels", help="corrected labels"),
                 _p("folds", "folds", help="person -> fold")),
         outputs=(_p("oof", "oof", per_job=True, help="out-of-fold probabilities (.csv)"),
                  _p("test", "test_probs", per_job=True, help="eval probabilities (.csv)")),
         modules=("maskpipe.predict",), fan_out=True, local=False, threads=4, gpu=True),
    Step("ensemble", "soft vote over models and folds, scored OOF", ("ensemble",),
         inputs=(_p("oof", "oof", every_job=True, help="every model x fold's OOF file"),
                 _p("test", "test_probs", every_job=True, help="every model x fold's test file"),
                 _p("labels", "labels", help="corrected labels"),
                 _p("persons", "persons_groups", help="eval photo groups (used where "
                                                      "ensemble.persons enables them)")),
         outputs=(_p("oof", "ensemble_oof", help="ensemble OOF probabilities"),
                  _p("test", "ensemble_test", help="ensemble eval probabilities"),
                  _p("scores", "ensemble_scores", help="per model x fold scores"),
                  # Cached like every output: results/ is not in git, so metrics must travel
                  # with `dvc push` / `dvc pull` (cache: false would leave them behind).
                  _p("metrics", "metrics", help="ensemble metrics (.json)", dvc="metrics")),
         modules=("maskpipe.ensemble",)),
    Step("mislabels", "rank suspected label errors with cleanlab; accept fixes", ("mislabels",),
         inputs=(_p("oof", "ensemble_oof", help="ensemble OOF probabilities"),
                 _p("labels", "labels", help="corrected labels"), *_TRAIN_CROPS),
         outputs=(_p("suspects", "mislabels_suspects", help="ranked suspects (.csv)"),
                  _p("review", "mislabels_review", help="review page (.html)"),
                  _p("summary", "mislabels_summary", help="summary (.json)")),
         modules=("maskpipe.mislabels.step",)),
)}

#: Pseudo-label rounds 2, 3, ...: label the eval photos the previous round's ensemble is sure of,
#: then train, predict and ensemble again as round 1 did, with those photos added to training.
_ROUNDS: dict[str, Step] = {s.name: s for s in (
    # Only the keys that change its labels: adding a round or choosing other models to train
    # again reruns no round that exists already.
    Step("pseudo", "label the eval photos the previous round's ensemble is sure of",
         ("pseudo.threshold", "pseudo.task_thresholds"),
         inputs=(_p("probs", "ensemble_test", round="previous",
                    help="the previous round's ensemble eval probabilities (person-consistent "
                         "where ensemble.persons is on)"),),
         outputs=(_p("labels", "pseudo_labels", round="this",
                     help="eval photos that passed: key, label 0..17, confidences (.csv)"),
                  _p("summary", "pseudo_summary", round="this", dvc="metrics",
                     help="how many passed, per class and per task (.json)")),
         modules=("maskpipe.pseudo",), rounds=True),
    again(_ROUND1["train"], "retrain", "train one model on one fold again, its training set "
                                       "plus the round's pseudo-labelled eval photos", (),
          (_p("pseudo_labels", "pseudo_labels", round="this", help="the round's pseudo-labels"),
           _p("eval_crops", "crops", "eval", help="eval crops"),
           _p("eval_index", "crop_index", "eval", help="eval crop index"))),
    again(_ROUND1["predict"], "repredict", "out-of-fold and test probabilities of a round's "
                                           "model x fold", ("checkpoint",)),
    again(_ROUND1["ensemble"], "reensemble", "a round's soft vote (models not trained again "
                                             "vote with their round-1 predictions)",
          ("oof", "test")),
)}

_LAST: dict[str, Step] = {s.name: s for s in (
    Step("submit", "write the checked ImageID,ans file", (),
         inputs=(_p("probs", "ensemble_test", round="last",
                    help="the last round's ensemble eval probabilities"),
                 _p("eval_manifest", "manifest", "eval", help="eval manifest")),
         outputs=(_p("submission", "submission", help="ImageID,ans in info.csv order"),),
         modules=("maskpipe.submission",)),
    Step("report", "one self-contained HTML report, its figures as PNGs and the learning curves "
                   "as CSV", ("report",),
         inputs=(_p("train_manifest", "manifest", "train", help="training manifest"),
                 _p("labels", "labels", help="corrected labels"),
                 _p("corrections", "corrections_applied", help="applied fixes"),
                 _p("crop_index_train", "crop_index", "train", help="training crop index"),
                 _p("crops_train", "crops", "train", help="training crops"),
                 _p("crop_index_eval", "crop_index", "eval", help="eval crop index"),
                 _p("crop_sample", "crop_sheet", "sample", help="sample contact sheet"),
                 _p("crop_fallbacks", "crop_sheet", "fallbacks", help="fallback contact sheet"),
                 _p("folds", "folds", help="person -> fold"),
                 _p("train_metrics", "train_metrics", every_job=True, help="every metrics.json"),
                 _p("tensorboard", "tensorboard", every_job=True, help="every TensorBoard folder"),
                 _p("scores", "ensemble_scores", help="per model x fold scores"),
                 _p("ensemble_oof", "ensemble_oof", help="ensemble OOF probabilities"),
                 _p("metrics", "metrics", help="ensemble metrics"),
                 _p("submission", "submission", help="the submission"),
                 _p("mislabels", "mislabels_suspects", help="ranked suspects"),
                 _p("mislabels_summary", "mislabels_summary", help="mislabels summary"),
                 _p("persons", "persons_groups", help="eval photo groups"),
                 _p("round_metrics", "metrics", round="rounds",
                    help="every round's ensemble metrics (pseudo-label rounds only)"),
                 _p("round_tests", "ensemble_test", round="rounds",
                    help="every round's ensemble eval probabilities (pseudo-label rounds only)"),
                 _p("pseudo_summaries", "pseudo_summary", round="extra",
                    help="every pseudo-label round's summary")),
         outputs=(_p("report", "report", help="the report (.html)"),
                  _p("figures", "report_figures", folder=True, help="its figures as PNG files"),
                  _p("history", "report_history", dvc="plots",
                     help="every model x fold x epoch's scalars (.csv)")),
         modules=("maskpipe.report",)),
)}

#: Every step, in pipeline order.
STEPS: dict[str, Step] = {**_ROUND1, **_ROUNDS, **_LAST}
#: The steps of a pseudo-label round, in the order a round runs them.
ROUND_STEPS: tuple[Step, ...] = tuple(_ROUNDS.values())


def model_folds(raw: dict) -> list[tuple[str, int]]:
    """Every (model, fold) of a config, in the order the engines list them."""
    return [(m, f) for m in raw["models"] for f in range(raw["folds"]["k"])]


def jobs(step: Step, raw: dict) -> list[dict[str, Any]]:
    """The wildcards of every job of ``step``: one per model x fold (of a round: per model
    ``pseudo.models`` selects), per round, both, or one job without any."""
    rounds = [{"round": r} for r in extra_rounds(raw)] if step.rounds else [{}]
    if not step.fan_out:
        return rounds
    models = retrained(raw) if step.rounds else list(raw["models"])
    return [{**r, "model": m, "fold": f} for r in rounds for m, f in model_folds(raw) if m in models]


def ordered_jobs(raw: dict) -> list[tuple[Step, dict[str, Any]]]:
    """Every job of a config in an order that runs: the table's, with the round steps' jobs
    grouped round by round (round 3's pseudo-labels need round 2's ensemble)."""
    out: list[tuple[Step, dict[str, Any]]] = []
    for step in STEPS.values():
        if not step.rounds:
            out += [(step, job) for job in jobs(step, raw)]
        elif step is ROUND_STEPS[0]:
            out += [(s, job) for r in extra_rounds(raw) for s in ROUND_STEPS
                    for job in jobs(s, raw) if job["round"] == r]
    return out


def jobs_for(target: str, raw: dict) -> list[tuple[Step, dict[str, Any]]]:
    """The jobs an engine runs to make step ``target``'s outputs, in :func:`ordered_jobs`' order:
    ``target``'s own and every job whose outputs they read, directly or through others."""
    ordered = ordered_jobs(raw)
    maker = {path: i for i, (step, job) in enumerate(ordered)
             for paths in files(step, "outputs", raw, **job).values() for path in paths}
    needed: set[int] = set()
    todo = [i for i, (step, _) in enumerate(ordered) if step.name == target]
    while todo:
        i = todo.pop()
        if i not in needed:
            needed.add(i)
            step, job = ordered[i]
            todo += [maker[p] for paths in files(step, "inputs", raw, **job).values()
                     for p in paths if p in maker]
    return [ordered[i] for i in sorted(needed)]


def files(step: Step, side: str, raw: dict, model: str = MODEL, fold: str = FOLD,
          cli_only: bool = False, round: str | int = ROUND) -> dict[str, list[str]]:
    """``side`` (inputs, outputs or options) of one job by port name: each a list of paths."""
    ports = getattr(step, side)
    return {p.name: p.paths(raw, model, fold, round) for p in ports if p.cli or not cli_only}


def log_path(step: Step, raw: dict, model: str = MODEL, fold: str = FOLD,
             round: str | int = ROUND) -> str:
    """The log file of one job of ``step``."""
    wildcards = ((round,) if step.rounds else ()) + ((model, fold) if step.fan_out else ())
    return Layout(str(raw["results"])).log(step.name, *wildcards)


@dataclass(frozen=True)
class Arg:
    """One part of a step's command: an option and where its value comes from."""

    flag: str
    kind: str  #: config, wildcards, params, input, output or log
    name: str = ""
    port: Port | None = field(default=None, compare=False)

    def absent(self, raw: dict) -> bool:
        """Left out of the command: a per-round list, and the config has no pseudo-label rounds
        (so the command is the same as before rounds existed)."""
        return (self.port is not None and self.port.round in ("rounds", "extra")
                and not self.port.paths(raw))


def command_args(step: Step) -> Iterator[Arg]:
    """The options of the command every engine runs for ``step``, in their order."""
    if step.sections:
        yield Arg("", "config", "config")
    if step.fan_out:
        yield Arg("--model", "wildcards", "model")
        yield Arg("--fold", "wildcards", "fold")
    for p in step.options:
        yield Arg(p.flag(), "params", p.name, p)
    for p in step.inputs:
        if p.cli:
            yield Arg(p.flag(), "input", p.name, p)
    for p in step.outputs:
        yield Arg(p.flag(output=True), "output", p.name, p)
    yield Arg("--log", "log")


def command(step: Step, value: Callable[[Arg], str], raw: dict) -> str:
    """``maskpipe STEP ...`` for config ``raw``, with each option's value from ``value`` (an
    engine's placeholder or the resolved paths)."""
    parts = [f"maskpipe {step.name}"]
    for arg in command_args(step):
        if arg.absent(raw):
            continue
        text = value(arg)
        parts.append(f"{arg.flag} {text}".strip())
    return " ".join(p for p in parts if p)


def argv(step: Step, raw: dict, config_files: list[str], model: str = MODEL,
         fold: str | int = FOLD, round: str | int = ROUND,
         root: Callable[[Port | None], str] | None = None) -> list[str]:
    """The resolved arguments of one job (after ``maskpipe``), as the engines would run it.

    ``root`` chooses the results folder of each port (a port's ``round`` applies below it) and,
    given None, of the log: for a job whose files live under several folders (a search trial,
    the quality bench). Default: every file under ``raw["results"]``.
    """
    fold = str(fold)

    def under(port: Port | None) -> dict:
        if root is None or (port is not None and port.config is not None):
            return raw
        return {**raw, "results": root(port)}

    out = [step.name]
    for arg in command_args(step):
        if arg.absent(raw):
            continue
        if arg.kind == "config":
            for f in config_files:
                out += ["--config", str(f)]
            continue
        out.append(arg.flag)
        if arg.kind == "wildcards":
            out.append(model if arg.name == "model" else fold)
        elif arg.kind == "log":
            out.append(log_path(step, under(None), model, fold, round))
        else:
            if arg.port is None:
                raise ValueError(f"{step.name}: {arg.flag} ({arg.kind}) has no port in the step table")
            out += arg.port.paths(under(arg.port), model, fold, round)
    return out


def local_steps() -> list[str]:
    """The cheap steps, which stay on the submitting machine under a cluster executor."""
    return [s.name for s in STEPS.values() if s.local]
