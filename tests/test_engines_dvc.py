"""DVC past `dvc repro` (tests/test_engines.py runs both engines): experiments queued and run in
the workspace, and a remote round trip, on a run DVC recorded with `dvc commit`.

The recorded run is the tiny run's (made in-process by conftest): these tests rerun at most the
ensemble and what follows, so they need no engine run of their own, and this file runs beside
tests/test_engines.py rather than after it."""

from __future__ import annotations

import json
import re
import shutil
import time

import pytest
import yaml

from conftest import dvc_changed, dvc_init, make_project, scheduled, sh

pytestmark = pytest.mark.slow

RESULTS = "results/tiny"


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, tiny_run):
    """A workflow copy holding the tiny run's outputs under RESULTS, recorded by `dvc commit`."""
    config_path, L = tiny_run
    cfg = yaml.safe_load(config_path.read_text())
    cfg["results"] = RESULTS
    project = make_project(tmp_path_factory.mktemp("recorded"), cfg)
    shutil.copytree(L.results, project / RESULTS, ignore=shutil.ignore_patterns("cache", "logs"))
    dvc_init(project)
    sh(["dvc", "commit", "--force", "-q"], project)  # hashes the outputs; runs nothing
    assert dvc_changed(project) == set()
    return project


def test_dvc_remote_round_trip_then_snakemake_touch(recorded, tmp_path):
    """run -> dvc push -> fresh clone -> dvc pull: DVC is clean and, after `snakemake --touch`
    (DVC does not keep mtimes), Snakemake schedules nothing either."""
    remote = tmp_path / "remote"
    sh(["dvc", "remote", "add", "-d", "local", str(remote)], recorded)
    sh(["git", "add", "-A"], recorded)
    sh(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "run"], recorded)
    sh(["dvc", "push", "-q"], recorded)
    clone = tmp_path / "clone"
    sh(["git", "clone", "-q", str(recorded), str(clone)], tmp_path)
    sh(["dvc", "pull", "-q"], clone)
    assert (clone / RESULTS / "submission.csv").read_bytes() == (recorded / RESULTS / "submission.csv").read_bytes()
    assert dvc_changed(clone) == set()
    sh(["snakemake", "submission", "--touch", "--cores", "1"], clone)
    assert scheduled(clone) == set()


def experiments(project) -> dict[str, dict]:
    """Every experiment of `dvc exp show --json`: its data (params, metrics) by name."""
    shown = json.loads(sh(["dvc", "exp", "show", "--json"], project).stdout)
    return {rev["name"]: rev["data"] for row in shown for exp in row.get("experiments") or []
            for rev in exp["revs"]}


def ran_stages(log: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", log))


def test_dvc_experiments_in_the_queue_and_in_the_workspace(recorded):
    """docs/search.md, the DVC way: an experiment queued with `-S` and run by
    `dvc queue start`, one run in the workspace with `dvc exp run -S`, both listed by `dvc exp
    show` with their params and metrics. Their parameters are the report's and the ensemble's,
    so only those stages and what follows run (the per-model rows of the rerun table are
    tests/test_engines.py's), which keeps the test cheap."""
    sh(["git", "add", "-A"], recorded)
    sh(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "before exp", "--allow-empty"],
       recorded)
    sh(["dvc", "exp", "run", "--queue", "-n", "queued", "-S", "config.yaml:report.title=queued"], recorded)
    sh(["dvc", "queue", "start", "-j", "1"], recorded)
    deadline = time.monotonic() + 600
    while re.search(r"\b(Queued|Running)\b", sh(["dvc", "queue", "status"], recorded).stdout):
        assert time.monotonic() < deadline, "the queued experiment did not finish"
        time.sleep(5)  # each poll is a `dvc` process (~2 s of CPU): the experiment runs beside it
    assert ran_stages(sh(["dvc", "queue", "logs", "queued"], recorded).stdout) == {"report"}
    out = sh(["dvc", "exp", "run", "-n", "hard", "-S", "config.yaml:ensemble.method=hard"], recorded)
    ran = ran_stages(out.stdout + out.stderr)
    assert "ensemble" in ran and not any(s.startswith(("train", "predict", "crop", "validate")) for s in ran), ran
    exps = experiments(recorded)
    assert {"queued", "hard"} <= set(exps)
    params = {n: exps[n]["params"]["config.yaml"]["data"] for n in ("queued", "hard")}
    assert params["queued"]["report"]["title"] == "queued" and params["queued"]["ensemble"]["method"] == "soft"
    assert params["hard"]["ensemble"]["method"] == "hard"
    for name in ("queued", "hard"):
        assert 0 <= exps[name]["metrics"][f"{RESULTS}/ensemble/metrics.json"]["data"]["oof_macro_f1"] <= 1
