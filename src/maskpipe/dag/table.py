"""The step table, collected from the step modules and ordered by the data each step reads.

Every module of :mod:`maskpipe.steps` that declares a ``STEP`` is a step (and one that also
declares ``AGAIN`` adds its pseudo-label round step, made from it). The table's order comes from
the data: a step follows every step whose outputs it reads (a topological sort, as Kedro orders
its nodes; ties by name), never from a list written by hand.

Everything that wires a step is read from :data:`STEPS`: the ``maskpipe STEP`` options
(:mod:`maskpipe.cli`), the Snakemake rules (``workflow/rules/steps.smk``), ``dvc.yaml``
(:mod:`maskpipe.dag.dvc`), the code files whose edits rerun it (:mod:`maskpipe.dag.sources`),
each job's files and command (:mod:`maskpipe.dag.jobs`) and the in-process runner
(:mod:`maskpipe.dag.runner`).

Pseudo-label rounds (the ``pseudo`` config section): a step marked ``rounds`` runs once per round
2 .. ``pseudo.rounds`` + 1 (round 1 is the plain pipeline) and, if it fans out, for the models
``pseudo.models`` selects. A port's ``round`` says which round's :meth:`Layout.round` folder it
lives in: see :data:`maskpipe.dag.rounds.ROUND_KINDS`.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable
from types import ModuleType

import maskpipe.steps
from maskpipe.dag.ports import Port, Step, again


def step_modules(package: ModuleType = maskpipe.steps) -> list[ModuleType]:
    """The modules of ``package`` that declare a step (``STEP``), by name."""
    found = []
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        if hasattr(module, "STEP"):
            if module.STEP.name.replace("-", "_") != info.name:
                raise ValueError(f"{module.__name__}: declares step {module.STEP.name!r}; a step "
                                 "module is named as its step")
            found.append(module)
    return found


def collect(package: ModuleType = maskpipe.steps) -> dict[str, Step]:
    """Every step of ``package``'s modules and their round steps, in :func:`run_order`."""
    steps = []
    for module in step_modules(package):
        steps.append(module.STEP)
        if hasattr(module, "AGAIN"):
            steps.append(again(module.STEP, module.AGAIN))
    return {s.name: s for s in run_order(steps)}


def _key(port: Port) -> tuple:
    return (port.layout, port.args) if port.layout else (port.config, port.under)


def _writers(port: Port, written: dict[tuple, list[Step]], reader: Step) -> list[Step]:
    """The steps whose outputs ``port`` of ``reader`` reads. A round-1 file (``round=""``) and the
    previous round's come from round-1 steps (an earlier round's own steps ran before this
    round's, so they order nothing within it); the job's own round's from round steps; the
    last round's or every round's from either."""
    steps = [w for w in written.get(_key(port), []) if w is not reader]
    if port.round in ("", "previous"):
        return [w for w in steps if not w.rounds]
    if port.round == "this":
        return [w for w in steps if w.rounds]
    return steps


def run_order(steps: Iterable[Step]) -> list[Step]:
    """``steps`` in an order that runs: each after every step whose outputs it reads (Kahn's
    topological sort; among the steps ready at once, by name).

    Raises:
        ValueError: two steps write the same file, or steps read each other's outputs in a circle.
    """
    steps = list(steps)
    written: dict[tuple, list[Step]] = {}
    for s in steps:
        for port in s.outputs:
            same = [w for w in written.get(_key(port), []) if w.rounds == s.rounds]
            if same:
                raise ValueError(f"steps {same[0].name} and {s.name} both write {port.layout or port.config}")
            written.setdefault(_key(port), []).append(s)
    needs = {s.name: {w.name for p in s.inputs for w in _writers(p, written, s)} for s in steps}
    by_name = {s.name: s for s in steps}
    out: list[Step] = []
    while needs:
        ready = sorted(name for name, before in needs.items() if not before)
        if not ready:
            raise ValueError(f"steps read each other's outputs in a circle: {', '.join(sorted(needs))}")
        name = ready[0]
        out.append(by_name[name])
        del needs[name]
        for before in needs.values():
            before.discard(name)
    return out


#: Every step, in an order that runs (:func:`run_order`).
STEPS: dict[str, Step] = collect()
#: The steps of a pseudo-label round, in the order a round runs them.
ROUND_STEPS: tuple[Step, ...] = tuple(s for s in STEPS.values() if s.rounds)


def module_of(step: Step) -> ModuleType:
    """The module of :mod:`maskpipe.steps` whose ``run`` runs ``step`` (a round step: its
    round-1 step's)."""
    return importlib.import_module(f"{maskpipe.steps.__name__}.{step.runs}")


def local_steps() -> list[str]:
    """The cheap steps, which stay on the submitting machine under a cluster executor."""
    return [s.name for s in STEPS.values() if s.local]
