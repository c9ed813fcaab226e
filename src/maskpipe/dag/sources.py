"""The source files each step's results depend on, so that editing a step's code reruns it.

Neither engine notices code on its own: Snakemake never tracks modules a command imports and DVC
only tracks what ``deps`` lists. So each rule lists the files below as inputs and each DVC stage
as ``deps``; both engines then rerun a step, and everything after it, when one of its files
changes (DVC by hash; Snakemake by mtime and, for files under its checksum limit, by content).

A step's modules are listed in its declaration (``STEP.modules`` in :mod:`maskpipe.steps`) and
followed through every import they make (function-level ones too), so a helper module a step
starts to use is tracked without editing the table. Modules in :data:`PLUMBING` are left out:
they parse arguments, name paths, write files atomically or pick a device, and editing them must
not retrain everything. Every other module is somebody's result: editing ``classes.py`` (the
label encoding) rightly reruns the whole pipeline. The files are read, never imported, so the
Snakefile stays quick to parse.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

from maskpipe.dag.table import STEPS

PACKAGE = "maskpipe"

#: Modules whose edits rerun nothing (use ``snakemake -R <rule>`` / ``dvc repro -f -s <stage>``
#: after an edit there that should change results), with every module of
#: :data:`PLUMBING_PACKAGES`: the step table's machinery and the steps' thin shells (a step's
#: results depend on the library code its ``STEP.modules`` name).
PLUMBING = frozenset({
    "maskpipe", "maskpipe.__main__", "maskpipe.cli", "maskpipe.commands", "maskpipe.config",
    "maskpipe.layout", "maskpipe.io", "maskpipe.devices",
})
PLUMBING_PACKAGES = ("maskpipe.dag", "maskpipe.steps")


def is_plumbing(module: str) -> bool:
    """Editing ``module`` reruns no step (:data:`PLUMBING`, :data:`PLUMBING_PACKAGES`)."""
    return module in PLUMBING or any(module == p or module.startswith(p + ".") for p in PLUMBING_PACKAGES)


#: Modules no pipeline step runs: the demo data generators (``maskpipe demo-data``, upstream of
#: the pipeline; with ``--faces`` the real-face modules; the landmarks and mask drawing they use,
#: :mod:`maskpipe.faces`, are the external step's code too) and the scorers of benchmarks and
#: tests (:mod:`maskpipe.demo.truth`: planted errors, eval person groups), and the hyperparameter search (``maskpipe search``, which runs the train and
#: predict steps' code on its own trial folders).
OFFLINE = frozenset({
    "maskpipe.demo", "maskpipe.demo.synthetic", "maskpipe.demo.realfaces", "maskpipe.demo.competition",
    "maskpipe.demo.shoot", "maskpipe.demo.dedupe",
    "maskpipe.demo.truth",
    "maskpipe.search", "maskpipe.search.space", "maskpipe.search.trial", "maskpipe.search.study",
    "maskpipe.search.results", "maskpipe.search.page",
})


def package_dir() -> Path:
    """The directory of the maskpipe package that runs (``src/maskpipe`` in a clone)."""
    return Path(__file__).resolve().parents[1]


def file_of(module: str, root: Path) -> Path | None:
    """``maskpipe.a.b`` -> ``root/a/b.py`` or ``root/a/b/__init__.py``; None if not a module."""
    parts = module.split(".")[1:]
    base = root.joinpath(*parts)
    for candidate in (base.with_suffix(".py") if parts else None, base / "__init__.py"):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def imports(node: ast.AST, root: Path) -> set[str]:
    """The maskpipe modules imported anywhere under ``node`` (``from x import y`` counts ``x.y``
    when ``y`` is a submodule)."""
    found = set()
    for n in ast.walk(node):
        names: list[str] = []
        if isinstance(n, ast.Import):
            names = [a.name for a in n.names]
        elif isinstance(n, ast.ImportFrom):
            if n.level:
                raise ValueError(f"maskpipe uses absolute imports only (line {n.lineno})")
            names = [n.module, *(f"{n.module}.{a.name}" for a in n.names)]
        found.update(m for m in names if m.split(".")[0] == PACKAGE and file_of(m, root))
    return found


def closure(modules: set[str] | list[str] | tuple[str, ...], root: Path) -> set[str]:
    """``modules`` and every non-plumbing module they import, directly or not, with the packages
    whose ``__init__`` importing them runs."""
    seen, todo = set(), list(modules)
    while todo:
        m = todo.pop()
        if m in seen or is_plumbing(m):
            continue
        path = file_of(m, root)
        if path is None:
            raise ValueError(f"{m}: no such module in {root}")
        seen.add(m)
        parts = m.split(".")
        todo.extend(".".join(parts[:i]) for i in range(2, len(parts)))
        try:
            todo.extend(imports(ast.parse(path.read_text()), root))
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
    return seen


def code_modules(step: str, root: Path | None = None) -> list[str]:
    """The non-plumbing modules the step ``step`` of the table runs, sorted."""
    if step not in STEPS:
        raise KeyError(f"the pipeline has no step {step!r}")
    return sorted(closure(STEPS[step].modules, root or package_dir()))


def step_sources(step: str, start: str | os.PathLike = ".", root: Path | None = None) -> list[str]:
    """The files of :func:`code_modules`, relative to ``start`` when inside it, else absolute."""
    root = root or package_dir()
    start = Path(start).resolve()
    out = []
    for m in code_modules(step, root):
        path = file_of(m, root)
        out.append(os.path.relpath(path, start) if path.is_relative_to(start) else str(path))
    return out
