"""Which source files each step depends on (maskpipe.dag.sources): the step table's modules, followed
through their imports, plumbing left out."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

from maskpipe.dag import sources
from maskpipe.dag.table import STEPS


def test_each_step_tracks_its_own_modules():
    mods = {s: set(sources.code_modules(s)) for s in STEPS}
    assert "maskpipe.crop.detect" in mods["crop"] and "maskpipe.images" in mods["crop"]
    assert "maskpipe.crop" in mods["crop"]  # the package's __init__.py runs too
    assert "maskpipe.train.optim" in mods["train"]
    assert "maskpipe.train.model" in mods["predict"]  # predict rebuilds the network
    assert mods["folds"] == {"maskpipe.data", "maskpipe.data.folds"}  # with its package's __init__
    assert mods["submit"] == {"maskpipe.classes", "maskpipe.submission"}
    assert not any(m.startswith("maskpipe.train") for m in mods["ensemble"] | mods["crop"])
    for step, found in mods.items():
        assert not any(sources.is_plumbing(m) for m in found), step


def test_sources_are_files_relative_to_start(tmp_path):
    root = sources.package_dir()
    rel = sources.step_sources("crop", start=root.parent)
    assert rel == sorted(rel) and all(not Path(p).is_absolute() for p in rel)
    assert "maskpipe/crop/__init__.py" in rel and all((root.parent / p).is_file() for p in rel)
    assert all(Path(p).is_absolute() for p in sources.step_sources("crop", start=tmp_path))


def test_a_new_import_is_followed(tmp_path):
    """Copy the package, make data/folds.py import metrics inside a function: folds now tracks it."""
    pkg = tmp_path / "maskpipe"
    shutil.copytree(sources.package_dir(), pkg, ignore=shutil.ignore_patterns("__pycache__"))
    folds = pkg / "data" / "folds.py"
    assert sources.code_modules("folds", pkg) == ["maskpipe.data", "maskpipe.data.folds"]
    folds.write_text(folds.read_text() + "\n\ndef _late():\n    from maskpipe import metrics\n")
    assert sources.code_modules("folds", pkg) == ["maskpipe.classes", "maskpipe.data", "maskpipe.data.folds",
                                               "maskpipe.metrics"]
    folds.write_text(folds.read_text() + "\nfrom . import labels\n")
    with pytest.raises(ValueError, match=r"folds\.py: maskpipe uses absolute imports"):
        sources.code_modules("folds", pkg)


def test_every_module_is_plumbing_or_some_steps_code():
    """A module no step tracks and that is not plumbing would be edited without any rerun; a
    module the table lists must exist."""
    root = sources.package_dir()
    tracked = set().union(*(sources.code_modules(s) for s in STEPS))
    seen = set()
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        name = ".".join(("maskpipe", *(parts[:-1] if parts[-1] == "__init__" else parts)))
        ast.parse(path.read_text())
        seen.add(name)
        assert (name in tracked) + sources.is_plumbing(name) + (name in sources.OFFLINE) == 1, name
    assert sources.PLUMBING | sources.OFFLINE | set(sources.PLUMBING_PACKAGES) <= seen
    assert tracked == set().union(*(sources.closure(s.modules, root) for s in STEPS.values()))


def test_a_module_missing_from_the_table_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="maskpipe.nope: no such module"):
        sources.closure(["maskpipe.nope"], sources.package_dir())


def test_unknown_step():
    with pytest.raises(KeyError, match="no step 'nope'"):
        sources.code_modules("nope")
