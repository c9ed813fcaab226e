"""Faults end to end: killed training jobs, a crashed fold, untrusted files, determinism.

The data and config cases of the catalogue are in test_manifest.py, test_config.py,
test_folds.py and test_io.py; the table in docs/troubleshooting.md lists them all.
"""

from __future__ import annotations

import copy
import json
import multiprocessing as mp
import os
import random
import re
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch
import yaml

from maskpipe.cli import main as cli_main
from maskpipe.layout import Layout

from conftest import REPO

EPOCHS = 3
TIMING = {"seconds", "images_per_second"}


def _config_with_epochs(tiny_run, dest: Path, epochs: int) -> Path:
    config_path, _ = tiny_run
    cfg = yaml.safe_load(config_path.read_text())
    cfg["models"]["a"]["epochs"] = epochs
    out = dest / "config.yaml"
    out.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return out


def _train_argv(config: Path, L: Layout, out: Path) -> list[str]:
    return ["train", "--config", str(config), "--model", "a", "--fold", "0",
            "--crops", L.crops("train"), "--crop-index", L.crop_index("train"),
            "--labels", L.labels(), "--folds", L.folds(),
            "--out-checkpoint", str(out / "checkpoint.pt"), "--out-metrics", str(out / "metrics.json"),
            "--out-tensorboard", str(out / "tensorboard"), "--resume", str(out / "resume.pt")]


def _child(argv: list[str]) -> None:
    torch.set_num_threads(1)
    os._exit(cli_main(argv))


def _start(argv: list[str]) -> mp.Process:
    """`maskpipe train` in a forked process: the real command, without 5 s of imports per trial."""
    proc = mp.get_context("fork").Process(target=_child, args=(argv,))
    proc.start()
    return proc


def _run(argv: list[str]) -> float:
    start = time.perf_counter()
    proc = _start(argv)
    proc.join(timeout=300)
    assert proc.exitcode == 0, f"train exited with {proc.exitcode}"
    return time.perf_counter() - start


def _without_timing(metrics: dict) -> dict:
    out = copy.deepcopy(metrics)
    out["history"] = [{k: v for k, v in row.items() if k not in TIMING} for row in out["history"]]
    return out


def _check_trustworthy(out: Path, epochs: int) -> str:
    """What a kill left must be either absent or whole and consistent; returns what was there."""
    ckpt_path, metrics_path, resume = out / "checkpoint.pt", out / "metrics.json", out / "resume.pt"
    found = []
    if metrics_path.exists():
        metrics = json.loads(metrics_path.read_text())  # whole JSON, never half written
        ckpt = torch.load(ckpt_path, weights_only=True)  # metrics present => its checkpoint too
        assert (ckpt["epoch"], ckpt["val_f1"]) == (metrics["best_epoch"], metrics["best_val_f1"])
        assert ckpt["model"] == metrics["model"] == "a"
        found.append("new pair" if len(metrics["history"]) == epochs else "old pair")
    elif ckpt_path.exists():
        torch.load(ckpt_path, weights_only=True)  # loadable; without metrics the job is unfinished
        found.append("checkpoint alone")
    if resume.exists():
        state = torch.load(resume, weights_only=True)
        assert 1 <= state["epoch"] <= epochs and len(state["history"]) == state["epoch"]
        found.append(f"resume after epoch {state['epoch']}")
    return ", ".join(found) or "nothing"


def _wait_for(log: Path, marker: str, proc: mp.Process, timeout: float = 300) -> float:
    """Poll the job's log until a line holds ``marker`` (or the job ends); the time it was seen."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if log.exists() and marker in log.read_text():
            return time.perf_counter()
        if not proc.is_alive():
            return time.perf_counter()
        time.sleep(0.002)
    raise AssertionError(f"{marker!r} never appeared in {log}")


# Where a kill is aimed: after the job logs one of these lines, plus a seeded random delay of
# up to one epoch. Aiming by the log, not by wall time, keeps every stage covered however slow
# the machine is (a run timed on a quiet machine and killed on a busy one hit one stage only).
STAGES = ["training and", *(f"epoch {e}: train loss" for e in range(1, EPOCHS + 1)), "best validation"]


def test_kill_9_at_random_points_never_leaves_outputs_to_trust_wrongly(tiny_run, tmp_path):
    """20 SIGKILLs at seeded random points of every stage; each rerun resumes and ends like an
    unkilled run.

    Every trial starts with the outputs of an older run (another config) in place, as after an
    edit. About 20 s on two busy cores: the jobs are forked, so no trial pays for the imports.
    """
    _, L = tiny_run
    config = _config_with_epochs(tiny_run, tmp_path, EPOCHS)
    ref_dir = tmp_path / "reference"
    ref_dir.mkdir()
    proc = _start([*_train_argv(config, L, ref_dir), "--log", str(ref_dir / "train.log")])
    seen_at = [_wait_for(ref_dir / "train.log", marker, proc) for marker in STAGES]
    proc.join(timeout=300)
    assert proc.exitcode == 0, f"train exited with {proc.exitcode}"
    epoch_time = (seen_at[-1] - seen_at[0]) / EPOCHS
    reference = _without_timing(json.loads((ref_dir / "metrics.json").read_text()))
    ref_state = torch.load(ref_dir / "checkpoint.pt", weights_only=True)["state_dict"]
    assert len(reference["history"]) == EPOCHS and not (ref_dir / "resume.pt").exists()

    rng = random.Random(10)
    seen = set()  # what each kill left behind
    resumed_mid_run = []  # (trial, epoch) of kills after a finished epoch that the rerun continued
    for trial in range(20):
        out = tmp_path / f"trial{trial}"
        out.mkdir()
        shutil.copy(L.checkpoint("a", 0), out / "checkpoint.pt")  # the older run's pair
        shutil.copy(L.train_metrics("a", 0), out / "metrics.json")
        proc = _start([*_train_argv(config, L, out), "--log", str(out / "killed.log")])
        stage = trial % (len(STAGES) + 1)  # the last: after the job has ended
        if stage < len(STAGES):
            _wait_for(out / "killed.log", STAGES[stage], proc)
            time.sleep(epoch_time * rng.random())
            os.kill(proc.pid, signal.SIGKILL)  # not yet joined: a pid that ended is still ours
        proc.join()
        seen.add(_check_trustworthy(out, EPOCHS))
        left = torch.load(out / "resume.pt", weights_only=True)["epoch"] if (out / "resume.pt").exists() else 0
        _run([*_train_argv(config, L, out), "--log", str(out / "rerun.log")])  # finishes, resuming where it can
        log = (out / "rerun.log").read_text()
        trained = [int(e) for e in re.findall(r"a fold 0 epoch (\d+): train loss", log)]
        if left:  # the rerun continued after the kill's last finished epoch, and trained only the rest
            assert f"resuming after epoch {left}" in log, (trial, left, log)
            assert trained == list(range(left + 1, EPOCHS + 1)), (trial, left, trained)
            if left < EPOCHS:
                resumed_mid_run.append((trial, left))
        else:
            assert trained == list(range(1, EPOCHS + 1)), (trial, trained)
        assert _without_timing(json.loads((out / "metrics.json").read_text())) == reference
        state = torch.load(out / "checkpoint.pt", weights_only=True)["state_dict"]
        assert all(torch.equal(state[k], v) for k, v in ref_state.items())
        assert not (out / "resume.pt").exists()
        assert not list(out.glob(".*.tmp")), "a stray temporary file outlived the rerun"
    # the kills left different states (every sixth after the job had ended: the new pair), and
    # some landed between two epochs, from which the rerun resumed
    assert "new pair" in seen and len(seen) >= 2, seen
    assert resumed_mid_run, f"no kill landed between two epochs: {sorted(seen)}"


def test_a_kill_between_checkpoint_and_metrics_leaves_no_old_metrics(tiny_run, tmp_path, monkeypatch):
    """The narrowest window: the new checkpoint is written, its metrics not yet."""
    from maskpipe.config import load_raw
    from maskpipe.train import loop

    config_path, L = tiny_run
    raw = load_raw(config_path)
    shutil.copy(L.checkpoint("a", 0), tmp_path / "checkpoint.pt")
    (tmp_path / "metrics.json").write_text('{"best_val_f1": 0.99, "note": "an older run"}\n')

    def killed(obj, path):
        raise KeyboardInterrupt("killed after the checkpoint")

    def train():
        return loop.train_fold(loop.TrainJob("a", 0, L.crops("train"), L.crop_index("train"), L.labels(),
                                             L.folds(), tmp_path / "checkpoint.pt",
                                             tmp_path / "metrics.json", tmp_path / "tb",
                                             resume=tmp_path / "resume.pt"),
                               {"train": raw["train"], "models.a": raw["models"]["a"]})

    monkeypatch.setattr(loop, "write_json", killed)
    with pytest.raises(KeyboardInterrupt):
        train()
    assert not (tmp_path / "metrics.json").exists()  # the older run's metrics are gone
    assert _check_trustworthy(tmp_path, 1) == "checkpoint alone, resume after epoch 1"
    monkeypatch.undo()
    metrics = train()  # resumes after the last epoch: writes both files, trains nothing
    expected = json.loads(Path(L.train_metrics("a", 0)).read_text())
    assert _without_timing(metrics) == _without_timing(expected)
    assert _check_trustworthy(tmp_path, 1) == "new pair"


@pytest.mark.slow
def test_a_crashed_fold_keeps_the_other_folds_work_with_keep_going(tiny_run, tmp_path):
    """Snakemake --keep-going: fold 1 fails (its resume file is blocked by a folder), fold 0's
    checkpoint and metrics stay, and the next run schedules fold 1 only."""
    from conftest import make_project, sh

    config_path, L = tiny_run
    cfg = yaml.safe_load(config_path.read_text())
    cfg["models"] = {"a": cfg["models"]["a"]}
    cfg["results"] = "results/tiny"
    project = make_project(tmp_path / "project", cfg)
    mine = Layout(cfg["results"])
    for done in ("manifest", "crops", "labels", "folds"):  # upstream steps, mtimes kept
        shutil.copytree(Path(L.results) / done, project / mine.results / done)
    blocker = project / mine.model_dir("a", 1) / "resume.pt"
    blocker.mkdir(parents=True)
    targets = [mine.train_metrics("a", f) for f in (0, 1)]
    proc = sh(["snakemake", *targets, "--cores", "2", "--keep-going"], project, check=False)
    assert proc.returncode != 0
    told = proc.stdout + proc.stderr
    assert "rule train" in told and "rule validate" not in told  # only the two train jobs ran
    ckpt = torch.load(project / mine.checkpoint("a", 0), weights_only=True)
    metrics = json.loads((project / mine.train_metrics("a", 0)).read_text())
    assert ckpt["epoch"] == metrics["best_epoch"]
    assert not (project / mine.checkpoint("a", 1)).exists()
    last = (project / mine.log("train", "a", 1)).read_text().strip().splitlines()[-1]
    assert re.fullmatch(r"maskpipe train: error: .*fold1/resume.pt: is a folder; cannot write .*", last)
    blocker.rmdir()
    dry = sh(["snakemake", *targets, "--cores", "2", "-n"], project).stdout
    assert re.findall(r"wildcards: (.*)", dry) == ["model=a, fold=1"]


# --- untrusted files: nothing executes code from data -----------------------------------------

class _Payload:
    """Unpickling this object would create ``marker``: code running from a data file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_that_would_run_code_is_refused(tiny_run, tmp_path):
    from maskpipe.io import MaskpipeError
    from maskpipe.train.predict import load_checkpoint
    from maskpipe.train.resume import ResumeState

    _, L = tiny_run
    marker = tmp_path / "pwned"
    evil = torch.load(L.checkpoint("a", 0), weights_only=True)
    evil["preprocess"] = _Payload(marker)
    torch.save(evil, tmp_path / "checkpoint.pt")
    torch.save({"key": "k", "epoch": 1, "payload": _Payload(marker)}, tmp_path / "resume.pt")
    with pytest.raises(MaskpipeError, match=r"checkpoint.pt: refused, it asks to build \S+ "
                                            r"and only weights are loaded \(weights_only=True\)$"):
        load_checkpoint(tmp_path / "checkpoint.pt", torch.device("cpu"))
    assert ResumeState.load(tmp_path / "resume.pt", "k", None, None, None, None, None) is None
    assert not marker.exists()
    torch.load(tmp_path / "resume.pt", weights_only=False)  # the payload is real: unsafe loading
    assert marker.exists()                                 # would have run it


def test_yaml_that_would_run_code_is_refused(tmp_path, shipped_config):
    from maskpipe.config import load_raw
    from maskpipe.io import MaskpipeError
    from maskpipe.data.labels import read_corrections

    marker = tmp_path / "pwned"
    tag = f"!!python/object/apply:os.mkdir [{str(marker)!r}]"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(shipped_config) + f"report: {{title: {tag}}}\n")
    corrections = tmp_path / "fixes.yaml"
    corrections.write_text(f"fixes:\n  - person: {tag}\n    gender: male\n    reason: x\n")
    with pytest.raises(MaskpipeError, match="config.yaml: not valid YAML"):
        load_raw(config)
    with pytest.raises(MaskpipeError, match="fixes.yaml: not valid YAML"):
        read_corrections(corrections)
    assert not marker.exists()
    yaml.unsafe_load(config.read_text())  # the tag is real: unsafe loading would run it
    assert marker.exists()


def test_a_tampered_manifest_cannot_send_the_crop_step_outside_the_data(tiny_run, tmp_path):
    import pandas as pd

    from maskpipe import crop as crop_step
    from maskpipe.config import load_raw
    from maskpipe.io import MaskpipeError
    from maskpipe.dag.jobs import files
    from maskpipe.dag.table import STEPS

    config_path, L = tiny_run
    raw = load_raw(config_path)
    manifest = pd.read_csv(L.manifest("train"), dtype=str)
    manifest.loc[3, "path"] = "../../../../etc/passwd"
    manifest.to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(MaskpipeError, match=r"train.csv: row 5: path '../../../../etc/passwd' leaves"):
        crop_step.crop_splits(tmp_path / "train.csv", L.manifest("eval"), Path(raw["data"]["root"]),
                      {k: v[0] for k, v in files(STEPS["crop"], "outputs",
                                                 {**raw, "results": str(tmp_path)}).items()},
                      tmp_path / "cache", raw["crop"])
    assert not (tmp_path / "crops").exists()


def _calls(tree):
    import ast

    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func), {k.arg: ast.unparse(k.value) for k in node.keywords}


def test_source_loads_data_only_safely():
    """A guard over src/: every torch.load has weights_only=True, YAML uses safe loaders only,
    and nothing unpickles, evaluates or executes what it reads."""
    import ast

    import maskpipe.data.labels as labels

    assert issubclass(labels._LineLoader, yaml.SafeLoader)
    safe_loaders = {"yaml.SafeLoader", "yaml.CSafeLoader", "_LineLoader"}
    forbidden = {"pickle.load", "pickle.loads", "eval", "exec", "pd.read_pickle", "yaml.unsafe_load",
                 "yaml.full_load", "yaml.load_all", "dill.load", "joblib.load", "marshal.loads"}
    problems, torch_loads = [], 0
    for path in sorted((REPO / "src").rglob("*.py")):
        for node, func, kw in _calls(ast.parse(path.read_text())):
            where = f"{path.relative_to(REPO)}:{node.lineno}: {func}"
            if func == "torch.load":
                torch_loads += 1
                if kw.get("weights_only") != "True":
                    problems.append(f"{where} without weights_only=True")
            elif func == "yaml.load" and kw.get("Loader") not in safe_loaders:
                problems.append(f"{where} with Loader={kw.get('Loader')}")
            elif func in forbidden:
                problems.append(where)
            elif func == "np.load" and kw.get("allow_pickle") not in (None, "False"):
                problems.append(f"{where} with allow_pickle")
    assert torch_loads >= 1  # io.load_torch, which predict and resume use: the guard looks at it
    assert not problems, problems


# --- determinism ------------------------------------------------------------------------------

_SECOND_PASS = """
import sys
from pathlib import Path

import yaml

sys.path.insert(0, sys.argv[1])
from conftest import run_pipeline

work = Path(sys.argv[2])
run_pipeline(yaml.safe_load((work / "asked.yaml").read_text()), work, report=False)
"""


def test_same_config_and_seed_on_cpu_give_identical_results(tiny_run, tmp_path):
    """A second run of every step but the report, in a fresh process with its own (empty)
    detection cache, gives byte-identical tables, crops, predictions and submission, the same
    training metrics and equal checkpoint weights."""
    import subprocess
    import sys

    from conftest import engine_env

    config_path, first = tiny_run
    cfg = yaml.safe_load(config_path.read_text())
    cfg["results"] = str(tmp_path / "results")
    (tmp_path / "asked.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = subprocess.run([sys.executable, "-c", _SECOND_PASS, str(REPO / "tests"), str(tmp_path)],
                          env=engine_env(REPO), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    L = Layout(cfg["results"])
    assert Path(L.crop_cache()).is_dir() and L.crop_cache() != first.crop_cache()  # detected afresh

    same_bytes = {"train manifest": lambda x: x.manifest("train"),
                  "eval manifest": lambda x: x.manifest("eval"),
                  "train crops": lambda x: x.crops("train"), "eval crops": lambda x: x.crops("eval"),
                  "labels": Layout.labels, "folds": Layout.folds,
                  "train crop index": lambda x: x.crop_index("train"),
                  "eval crop index": lambda x: x.crop_index("eval"),
                  "crop sample sheet": lambda x: x.crop_sheet("sample"),
                  "crop fallback sheet": lambda x: x.crop_sheet("fallbacks"),
                  "ensemble oof": Layout.ensemble_oof,
                  "ensemble test": Layout.ensemble_test, "scores": Layout.ensemble_scores,
                  "metrics": Layout.metrics, "submission": Layout.submission,
                  "suspects": Layout.mislabels_suspects, "review page": Layout.mislabels_review,
                  "mislabels summary": Layout.mislabels_summary}
    for name, path in same_bytes.items():
        assert Path(path(L)).read_bytes() == Path(path(first)).read_bytes(), name
    for m in cfg["models"]:
        for f in range(cfg["folds"]["k"]):
            mine = json.loads(Path(L.train_metrics(m, f)).read_text())
            theirs = json.loads(Path(first.train_metrics(m, f)).read_text())
            assert _without_timing(mine) == _without_timing(theirs), (m, f)
            assert Path(L.oof(m, f)).read_bytes() == Path(first.oof(m, f)).read_bytes(), (m, f)
            assert Path(L.test_probs(m, f)).read_bytes() == Path(first.test_probs(m, f)).read_bytes(), (m, f)
            a = torch.load(L.checkpoint(m, f), weights_only=True)["state_dict"]
            b = torch.load(first.checkpoint(m, f), weights_only=True)["state_dict"]
            assert a.keys() == b.keys(), (m, f)
            unequal = [k for k in a if not torch.equal(a[k], b[k])]
            assert not unequal, (m, f, unequal[:5])
