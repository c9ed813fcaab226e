"""A step's contract: the step (:class:`Step`), each file it reads or writes (:class:`Port`),
how a pseudo-label round runs it again (:class:`Again`), and one job's resolved files
(:class:`Job`, what the step's ``run`` receives).

A port names where a file lives by a :class:`maskpipe.layout.Layout` method (or a config key
holding a path); :meth:`Port.paths` resolves it for a config, a job's model and fold and a
pseudo-label round (:mod:`maskpipe.dag.rounds` says which round's folder). Each step module of
:mod:`maskpipe.steps` declares its ``STEP`` with these types; nothing here imports the steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from maskpipe.dag.rounds import retrained, round_layouts
from maskpipe.layout import Layout

#: Placeholders of a per-job path, filled with a model and a fold (or engine wildcards).
MODEL, FOLD = "{model}", "{fold}"
#: Placeholder of a pseudo-label round's number (2, 3, ...).
ROUND = "{round}"


@dataclass(frozen=True)
class Plot:
    """How ``dvc plots show`` draws a CSV output (DVC's plot properties)."""

    x: str
    y: str
    template: str
    title: str


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
    plot: Plot | None = None  #: for ``dvc="plots"``: how DVC draws it
    #: for a folder of PNG outputs: its figures go into `snakemake --report` (one entry each)
    figures: bool = False
    round: str = ""  #: which pseudo-label round's files (:data:`maskpipe.dag.rounds.ROUND_KINDS`)
    #: for options: left out of a command, it is where this port puts it for the config (False:
    #: it stays out, e.g. train's resume file, which by hand means no resuming)
    fill: bool = True
    #: a config key: while it is empty (null, [], false) the port has no path and is left out of
    #: the command (an input only some configs have, e.g. the external faces' crops)
    when: str = ""
    listed: bool = False  #: ``config`` holds a list of paths: one path per entry

    def __post_init__(self) -> None:
        if self.plot is not None and self.dvc != "plots":
            raise ValueError(f"port {self.name}: plot= needs dvc='plots'")
        if self.figures and not self.folder:
            raise ValueError(f"port {self.name}: figures=True marks a folder of PNGs (folder=True)")

    @property
    def many(self) -> bool:
        """A list of paths (one per model x fold, per round or per listed entry), not one path."""
        return self.every_job or self.listed or self.round in ("rounds", "extra")

    def flag(self, output: bool = False) -> str:
        """The command line option: ``--NAME`` for inputs, ``--out-NAME`` for outputs."""
        return "--" + ("out-" if output else "") + self.name.replace("_", "-")

    def paths(self, raw: dict, model: str = MODEL, fold: str = FOLD,
              round: str | int = ROUND) -> list[str]:
        """Where this port lives for a config (and a job's round); empty when its config key is
        null, for the rounds of a config without pseudo-label rounds, or while ``when`` is empty."""
        if not switched_on(raw, self.when):
            return []
        if self.config is not None:
            node = config_value(raw, self.config)
            if node is None:
                return []
            return [f"{str(n).rstrip('/')}/{self.under}" if self.under else str(n)
                    for n in (node if self.listed else [node])]
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
    modules: tuple[str, ...]  #: its code: these modules and what they import (maskpipe.dag.sources)
    options: tuple[Port, ...] = ()  #: paths the engines pass that are neither inputs nor outputs
    fan_out: bool = False  #: one job per model x fold
    local: bool = True  #: cheap: runs on the submitting machine under a cluster executor
    threads: int = 1
    gpu: bool = False
    rounds: bool = False  #: once per pseudo-label round 2, 3, ... (its files: ``round="this"``)
    threads_option: bool = False  #: its command takes ``--threads`` (torch's CPU threads)
    base_step: str = ""  #: the step whose ``run`` it runs (a round step's round-1 step)
    #: a config key: while it is empty (null, [], false) the step has no job (no rule is asked
    #: for its outputs, no DVC stage is written)
    when: str = ""

    def active(self, raw: dict) -> bool:
        """Whether the step has jobs under config ``raw`` (:attr:`when`)."""
        return switched_on(raw, self.when)

    @property
    def runs(self) -> str:
        """The module of :mod:`maskpipe.steps` whose ``run`` runs this step (its own name, or a
        round step's round-1 step)."""
        return self.base_step or self.name.replace("-", "_")


@dataclass(frozen=True)
class Again:
    """How a pseudo-label round runs a round-1 step again, declared beside the step (``AGAIN``).

    The round's step runs the same ``run`` on the round's files: its outputs and options, and
    the inputs named in ``moved`` (what an earlier step of the round wrote), live in the
    round's folder; ``extra`` inputs are added.
    """

    name: str
    help: str
    moved: tuple[str, ...] = ()
    extra: tuple[Port, ...] = ()


_IN_ROUND = " (in the round's folder)"


def again(step: Step, spec: Again) -> Step:
    """``step`` as a pseudo-label round runs it (:class:`Again`)."""
    def here(p: Port) -> Port:
        return replace(p, round="this", help=p.help + _IN_ROUND)

    return replace(step, name=spec.name, help=spec.help, base_step=step.runs, rounds=True,
                   inputs=tuple(here(p) if p.name in spec.moved else p for p in step.inputs) + spec.extra,
                   outputs=tuple(map(here, step.outputs)), options=tuple(map(here, step.options)))


def switched_on(raw: dict, key: str) -> bool:
    """Whether config key ``key`` (dotted; "": always on) holds a value that is not empty (null,
    [], false) in ``raw``: a port's or step's ``when``."""
    if not key:
        return True
    try:
        return bool(config_value(raw, key))
    except (KeyError, TypeError):  # a section the config does not have: off
        return False


def layout_port(name: str, layout: str, *args: str, help: str, **kw: Any) -> Port:
    """A port at ``Layout.LAYOUT(*args)`` below the results folder."""
    return Port(name, help, layout=layout, args=args, **kw)


def data_port(name: str, under: str) -> Port:
    """A file or folder of the raw data, ``under`` the config's ``data.root``: tracked by the
    engines, not passed to the command (the step finds it below the root)."""
    return Port(name, f"data.root/{under}", config="data.root", under=under, cli=False)


#: One port's value in a :class:`Job`: a path, a list of paths (a port of many), or None (a
#: path the config leaves empty, or an option not given).
PortValue = Path | list[Path] | None


@dataclass(frozen=True)
class Job:
    """One job of a step with its files resolved: what the step's ``run`` receives.

    ``inputs``, ``outputs`` and ``options`` hold the ports the command passes (``cli``), by
    name; ``extra`` the options a person may give on the command line beyond the step's ports
    (a step module's ``add_arguments``, e.g. crop's ``--workers``), empty when an engine runs it.
    """

    step: str
    inputs: Mapping[str, PortValue]
    outputs: Mapping[str, PortValue]
    options: Mapping[str, PortValue] = field(default_factory=dict)
    model: str | None = None
    fold: int | None = None
    log: Path | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


def config_value(raw: dict, key: str) -> Any:
    """The value of dotted ``key`` in config ``raw``."""
    node: Any = raw
    for part in key.split("."):
        node = node[part]
    return node


def model_folds(raw: dict) -> list[tuple[str, int]]:
    """Every (model, fold) of a config, in the order the engines list them."""
    return [(m, f) for m in raw["models"] for f in range(raw["folds"]["k"])]
