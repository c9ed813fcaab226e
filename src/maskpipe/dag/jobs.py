"""Each job of the step table for a config: its wildcards, its files, its command.

What :data:`maskpipe.dag.table.STEPS` says per step, resolved per job: the jobs of a step (one
per model x fold, per pseudo-label round, both, or one), every job of a config in an order that
runs, the jobs a step's outputs need, a job's files and log, and the ``maskpipe STEP ...``
command every engine runs (an engine's placeholders, or the resolved arguments). The engines
(``workflow/rules/common.smk``, :mod:`maskpipe.dag.dvc`), the search's trials, the benchmarks
and the tests' in-process runner all build their commands here; :func:`resolve` gives one job's
files as a :class:`Job`, what a step's ``run`` receives.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from maskpipe.dag.ports import FOLD, MODEL, ROUND, Job, Port, PortValue, Step, model_folds, switched_on
from maskpipe.dag.rounds import extra_rounds, retrained
from maskpipe.dag.table import ROUND_STEPS, STEPS
from maskpipe.layout import Layout


def jobs(step: Step, raw: dict) -> list[dict[str, Any]]:
    """The wildcards of every job of ``step``: one per model x fold (of a round: per model
    ``pseudo.models`` selects), per round, both, or one job without any."""
    if not step.active(raw):
        return []
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


def final_outputs(raw: dict) -> list[str]:
    """Every output of a config's jobs that no job reads (the report's files, the mislabels
    review, ...): what the engines' targets ask for, so that Snakemake runs every job `dvc repro`
    runs, a step added at the end of the pipeline included."""
    ordered = ordered_jobs(raw)
    read = {p for step, job in ordered for paths in files(step, "inputs", raw, **job).values() for p in paths}
    return list(dict.fromkeys(p for step, job in ordered for paths in files(step, "outputs", raw, **job).values()
                              for p in paths if p not in read))


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
        (so the command is the same as before rounds existed), or a port whose ``when`` key the
        config leaves empty."""
        return (self.port is not None and (self.port.round in ("rounds", "extra") or bool(self.port.when))
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


def _results(raw: dict, root: Callable[[Port | None], str] | None) -> Callable[[Port | None], dict]:
    """The config a port (None: the log) is resolved under: ``raw``, or with ``root(port)`` as
    its results folder (a port's ``round`` applies below it; a config key's path stays)."""
    def under(port: Port | None) -> dict:
        if root is None or (port is not None and port.config is not None):
            return raw
        return {**raw, "results": root(port)}

    return under


def argv(step: Step, raw: dict, config_files: list[str], model: str = MODEL,
         fold: str | int = FOLD, round: str | int = ROUND,
         root: Callable[[Port | None], str] | None = None) -> list[str]:
    """The resolved arguments of one job (after ``maskpipe``), as the engines would run it.

    The engines' command line as a list: what a test compares with the rule's shell line and the
    DVC stage's ``cmd`` (the library's own callers, the runner, a search trial and the quality
    bench, take the resolved :class:`Job` of :func:`resolve` instead). ``root`` chooses the
    results folder of each port (a port's ``round`` applies below it) and, given None, of the
    log. Default: every file under ``raw["results"]``.
    """
    fold = str(fold)
    under = _results(raw, root)
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


def port_value(port: Port, paths: list[str]) -> PortValue:
    """``paths`` of ``port`` as a :class:`Job` holds them."""
    if port.many:
        return [Path(p) for p in paths]
    return Path(paths[0]) if paths else None


def resolve(step: Step, raw: dict, model: str | None = None, fold: int | None = None,
            round: int | None = None, root: Callable[[Port | None], str] | None = None) -> Job:
    """One job of ``step`` for config ``raw`` with the files its command would be given
    (:func:`argv`'s, ``root`` likewise)."""
    under = _results(raw, root)
    wildcards = {"model": model if model is not None else MODEL,
                 "fold": str(fold) if fold is not None else FOLD,
                 "round": round if round is not None else ROUND}

    def side(ports: tuple[Port, ...]) -> dict[str, PortValue]:
        return {p.name: port_value(p, p.paths(under(p), **wildcards)) for p in ports if p.cli}

    return Job(step.name, side(step.inputs), side(step.outputs), side(step.options),
               model if step.fan_out else None, int(fold) if step.fan_out else None,
               Path(log_path(step, under(None), **wildcards)))
