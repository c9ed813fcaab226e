"""The step table's types: a step (:class:`Step`) and each file it reads or writes (:class:`Port`).

A port names where a file lives by a :class:`maskpipe.layout.Layout` method (or a config key
holding a path); :meth:`Port.paths` resolves it for a config, a job's model and fold and a
pseudo-label round (:mod:`maskpipe.dag.rounds` says which round's folder).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from maskpipe.dag.rounds import retrained, round_layouts
from maskpipe.layout import Layout

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
    round: str = ""  #: which pseudo-label round's files (:data:`maskpipe.dag.rounds.ROUND_KINDS`)
    #: for options: left out of a command, it is where this port puts it for the config (False:
    #: it stays out, e.g. train's resume file, which by hand means no resuming)
    fill: bool = True

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
    modules: tuple[str, ...]  #: its code: these modules and what they import (maskpipe.dag.sources)
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


def model_folds(raw: dict) -> list[tuple[str, int]]:
    """Every (model, fold) of a config, in the order the engines list them."""
    return [(m, f) for m in raw["models"] for f in range(raw["folds"]["k"])]
