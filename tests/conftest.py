"""Shared fixtures: a tiny generated dataset and the REAL config.yaml shrunk to run in seconds."""

from __future__ import annotations

import atexit
import contextlib
import copy
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from maskpipe.demo.synthetic import generate_demo
from maskpipe.layout import Layout

REPO = Path(__file__).resolve().parents[1]
#: The venv's bin, so engines running `maskpipe ...` find the same interpreter's console script.
BIN = Path(sys.executable).parent

# Under pytest-xdist (`make test`: 2 workers on 2 cores) the training and prediction a worker
# runs itself take one torch thread: two workers of two threads each spin against each other.
# A fresh process the tests start for a second pass imports this file too (same thread count,
# same floating-point results); the engines' jobs do not, and run as they do for users.
if os.environ.get("PYTEST_XDIST_WORKER"):
    import torch

    torch.set_num_threads(1)

TINY_PERSONS = 12
TINY_EVAL = 8


#: The research-only real faces (../shared/realfaces, beside the repo; never copied into it).
UTKFACE = REPO.parent / "shared" / "realfaces" / "utkface"
#: Age ranges of the real-face picks: under 30, 30-59, the train ">=60" ages, older.
AGE_RANGES = ((18, 29), (30, 59), (60, 65), (66, 90))



def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules with the most ``slow`` tests (whole engine runs) first, each module's own order kept.
    Under ``make test`` (xdist ``--dist loadfile --no-loadscope-reorder``) a module is one unit of
    work, handed to the workers in this order: the long ones start at once and the short ones fill
    in beside them, instead of a long module starting last on one worker while the other idles."""
    slow = Counter(i.module.__name__ for i in items if i.get_closest_marker("slow"))
    first_seen = {m: k for k, m in enumerate(dict.fromkeys(i.module.__name__ for i in items))}
    items.sort(key=lambda i: (-slow[i.module.__name__], first_seen[i.module.__name__]))

def link_real_faces(folder: Path, counts: dict[tuple[str, int, int], int]) -> Path:
    """``folder`` made a small faces folder for ``demo-data --faces``: the first ``n`` faces of
    each ``(gender, youngest, oldest)`` as symlinks to the shared photos, plus their labels.csv.
    Skips the test, saying why, where the shared folder is absent."""
    import pandas as pd

    if not (UTKFACE / "labels.csv").is_file():
        pytest.skip(f"{UTKFACE.resolve()} is absent: the real faces are research-only and live beside the repo")
    labels = pd.read_csv(UTKFACE / "labels.csv").sort_values("file")
    picked = pd.concat([labels[(labels["gender"] == g) & labels["age"].between(lo, hi)].head(n)
                        for (g, lo, hi), n in counts.items()])
    (folder / "images").mkdir(parents=True)
    for name in picked["file"]:
        os.symlink((UTKFACE / "images" / name).resolve(), folder / "images" / name)
    picked.to_csv(folder / "labels.csv", index=False)
    return folder


#: External faces for the ``external`` config section: (file, age as written, gender as written).
EXTERNAL_FACES = [("a.png", "24", "male"), ("b.png", "60-69", "Female"), ("c.png", "more than 70", "male"),
                  ("d.png", "45", "female"), ("e.png", "70+", "female"), ("f.png", "3-9", "male")]


def write_face_folder(folder: Path, rows: list[tuple[str, str, str]] = EXTERNAL_FACES) -> Path:
    """``folder`` made a folder of external faces: flat-coloured images (no face for MTCNN to
    find: each takes the fallback crop), one colour each, and their labels.csv."""
    import pandas as pd
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for k, (file, _, _) in enumerate(rows):
        if not (folder / file).exists():
            Image.new("RGB", (130, 150), (40 * k % 256, 90, 200 - 20 * k)).save(folder / file)  # >= min_face_size
    pd.DataFrame(rows, columns=["file", "age", "gender"]).to_csv(folder / "labels.csv", index=False)
    return folder


def every_group(n: int) -> dict[tuple[str, int, int], int]:
    """``n`` faces of each gender x age range."""
    return {(g, lo, hi): n for g in ("male", "female") for lo, hi in AGE_RANGES}


def shrink(config: dict, data_root: Path, results: str = "results/tiny") -> dict:
    """The shipped config made tiny: 2 folds, 2 small models, 1 epoch, 32 px, no pretraining."""
    cfg = copy.deepcopy(config)
    cfg["data"]["root"] = str(data_root)
    cfg["results"] = results
    cfg["crop"]["size"] = [40, 32]
    cfg["folds"]["k"] = 2
    cfg["train"]["num_workers"] = 0
    base = next(iter(config["models"].values()))
    small = {**base, "arch": "test_resnet", "pretrained": False, "image_size": [32, 32],
             "epochs": 1, "batch_size": 16}
    cfg["models"] = {"a": small, "b": {**small, "arch": "test_convnext",
                                       "optimizer": {**base["optimizer"], "lr": 0.001}}}
    cfg["predict"]["batch_size"] = 32
    return cfg


@pytest.fixture(scope="session")
def shipped_config() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "demo"
    generate_demo(root, persons=TINY_PERSONS, eval_images=TINY_EVAL, seed=0)
    return root


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, demo_root, shipped_config) -> tuple[Path, Layout]:
    """Every step run once, in-process through the CLI, on the tiny data: (config path, layout)."""
    work = tmp_path_factory.mktemp("run")
    return run_pipeline(shrink(shipped_config, demo_root, results=str(work / "results")), work)


@pytest.fixture
def bench(monkeypatch, capsys):
    """Run ``bench/NAME.py`` with ``args`` in this process (runpy, as ``__main__``, so no test pays
    for importing torch again); its stdout. Restores torch's thread count, which the scripts set
    for themselves."""
    import runpy

    import torch

    threads = torch.get_num_threads()

    def run(name: str, *args: str) -> str:
        script = REPO / "bench" / f"{name}.py"
        monkeypatch.setattr(sys, "argv", [str(script), *map(str, args)])
        try:
            runpy.run_path(str(script), run_name="__main__")
        finally:
            torch.set_num_threads(threads)
        return capsys.readouterr().out

    return run


def run_pipeline(cfg: dict, work: Path, crop_cache: str | None = None,
                 report: bool = True) -> tuple[Path, Layout]:
    """Run every step of ``cfg`` (saved as ``work``/config.yaml) in-process with the files the
    engines would pass (from the step table), in DAG order, through the library's job runner:
    (config path, layout). ``crop_cache`` replaces the detection cache folder."""
    from maskpipe.config import validate
    from maskpipe.dag.runner import run_pipeline as run_jobs

    config_path = work / "config.yaml"
    config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    run_jobs(validate(copy.deepcopy(cfg)), [config_path], until=None if report else "report",
             replace={"crop": {"cache": Path(crop_cache)}} if crop_cache else None)
    return config_path, Layout(cfg["results"])


def write_pseudo_labels(layout: Layout, out: Path) -> Path:
    """Pseudo-labels of every eval photo of a run, written to ``out`` by the pseudo step itself
    (maskpipe.pseudo.label_confident) from sure one-hot probabilities: the classes cycle over the 18 in steps
    of 5, so every mask state (and an age model's own) gets photos."""
    import numpy as np
    import pandas as pd

    from maskpipe import pseudo
    from maskpipe.classes import PROB_COLUMNS

    keys = pd.read_csv(layout.crop_index("eval"), dtype={"key": str})["key"]
    probs = np.zeros((len(keys), len(PROB_COLUMNS)))
    probs[np.arange(len(keys)), (np.arange(len(keys)) * 5) % len(PROB_COLUMNS)] = 1.0
    table = pd.concat([keys, pd.DataFrame(probs, columns=PROB_COLUMNS)], axis=1)
    table.to_csv(out.with_suffix(".probs.csv"), index=False)
    pseudo.label_confident(out.with_suffix(".probs.csv"), 0.9, {"mask": 0.9}, out, out.with_suffix(".json"))
    return out


def make_project(dest: Path, config: dict) -> Path:
    """A runnable copy of the workflow (Snakefile, rules, envs, the maskpipe sources) with
    ``config`` as config.yaml. :func:`sh` runs the copy's sources (PYTHONPATH), so the engines
    track and run the same files, as in a clone, and a test may edit them."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copytree(REPO / "src" / "maskpipe", dest / "src" / "maskpipe",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "Snakefile", dest / "Snakefile")
    shutil.copytree(REPO / "workflow", dest / "workflow", symlinks=True)
    shutil.copytree(REPO / "envs", dest / "envs")
    shutil.copytree(REPO / "requirements", dest / "requirements")
    (dest / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return dest


def engine_env(cwd: Path | None = None) -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    if cwd is not None and (Path(cwd) / "src" / "maskpipe").is_dir():
        env["PYTHONPATH"] = str(Path(cwd).resolve() / "src")
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def sh(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run an engine command; on failure show its output in the assertion."""
    proc = subprocess.run(cmd, cwd=cwd, env=engine_env(cwd), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


#: One planner process per workflow folder (tests/engine_planner.py), kept for the session.
_PLANNERS: dict[Path, subprocess.Popen] = {}


def _close_planners() -> None:
    for proc in _PLANNERS.values():
        if proc.poll() is None:
            proc.stdin.close()
            proc.wait(timeout=30)


atexit.register(_close_planners)


def scheduled(project: Path, target: str = "submission") -> set[tuple[str, str]]:
    """(rule, wildcards) of every job `snakemake TARGET -n` would run in ``project``: asked of
    a planner process that runs the project's sources as the engines do and imports Snakemake
    once (a `snakemake -n` subprocess spends most of its seconds importing)."""
    project = Path(project).resolve()
    proc = _PLANNERS.get(project)
    if proc is None or proc.poll() is not None:
        proc = _PLANNERS[project] = subprocess.Popen(
            [sys.executable, str(REPO / "tests" / "engine_planner.py")], cwd=project, env=engine_env(project),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    proc.stdin.write(json.dumps({"target": target}) + "\n")
    proc.stdin.flush()
    line = proc.stdout.readline()
    if not line:
        raise AssertionError(f"the Snakemake planner of {project} stopped (exit status {proc.wait()})")
    answer = json.loads(line)
    if "error" in answer:
        raise AssertionError(f"snakemake {target} -n failed in {project}:\n{answer['error'][-6000:]}")
    return {(rule, wildcards) for rule, wildcards in answer["jobs"]}


def dvc_changed(project: Path) -> set[str]:
    """The stages `dvc status` lists as changed (its Python API, in this process: the command
    line spends most of its time starting)."""
    from dvc.repo import Repo

    with contextlib.chdir(project), Repo(".") as repo:  # stage names are relative to the cwd
        return set(repo.status())


def dvc_init(project: Path) -> None:
    """``project`` made a git and DVC repository with its generated dvc.yaml (results and
    Snakemake's state left out of git)."""
    (project / ".gitignore").write_text("/results/\n/.snakemake/\n")
    sh(["git", "init", "-q"], project)
    sh(["dvc", "init", "-q"], project)
    sh(["maskpipe", "dvc-yaml", "--config", "config.yaml"], project)


def snakemake_jobs(project: Path, configfiles: list[Path] = (), target: str = "submission") -> tuple[list, object]:
    """Every job of ``snakemake TARGET --forceall`` as Snakemake plans it, in-process and without
    running anything (a dry run through ``snakemake.api``): (jobs, workflow)."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import (ConfigSettings, DAGSettings, OutputSettings, Quietness,
                                          ResourceSettings)

    cwd = os.getcwd()
    try:
        with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
            wf = api.workflow(ResourceSettings(cores=64), ConfigSettings(configfiles=list(configfiles)),
                              snakefile=project / "Snakefile", workdir=project)
            wf.dag(DAGSettings(targets={target}, forceall=True)).execute_workflow(executor="dryrun")
            workflow = wf._workflow
            return list(workflow.dag.jobs), workflow
    finally:
        os.chdir(cwd)


def parallel_search(folder: Path) -> Path:
    """A search overlay (``folder``/search.yaml): 2 trials of the learning rate on fold 0, one
    epoch each, both at once (``search.parallel: 2``)."""
    path = folder / "search.yaml"
    path.write_text(yaml.safe_dump({"replace": ["search"], "search": {
        "trials": 2, "folds": [0], "seed": 0, "parallel": 2,
        "space": {"lr": {"low": 1.0e-4, "high": 1.0e-2, "log": True}, "epochs": [1]}}}))
    return path
