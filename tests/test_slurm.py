"""A real single-node Slurm cluster on localhost runs the tiny pipeline and a `dvc repro`.

Needs root and Debian's slurm-wlm + munge (.ci/run installs them); skips with the reason
otherwise, and fails instead where MASKPIPE_REQUIRE_SLURM=1 (as .ci/run sets it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pandas as pd
import pytest

from conftest import REPO, dvc_changed, make_project, sh, shrink
from maskpipe.dag.table import STEPS

pytestmark = pytest.mark.slow

CLUSTER = REPO / "tests" / "slurm" / "cluster.sh"


def unavailable(reason: str) -> None:
    """Skip, or fail where CI requires Slurm (MASKPIPE_REQUIRE_SLURM=1 in .ci/run)."""
    if os.environ.get("MASKPIPE_REQUIRE_SLURM") == "1":
        pytest.fail(f"MASKPIPE_REQUIRE_SLURM=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    missing = [b for b in ("slurmctld", "slurmd", "sbatch", "squeue", "munged") if not shutil.which(b)]
    if missing:
        unavailable(f"Slurm is not installed here (missing {', '.join(missing)}); .ci/run installs it")
    if os.geteuid() != 0:
        unavailable("the test cluster runs its daemons as root")
    state = tmp_path_factory.mktemp("slurm")
    proc = subprocess.run(["bash", str(CLUSTER), "start", str(state)], capture_output=True, text=True)
    if proc.returncode != 0:
        unavailable(f"the Slurm test cluster did not start: {proc.stderr.strip()[-500:]}")
    os.environ["SLURM_CONF"] = proc.stdout.strip().splitlines()[-1]
    yield state
    subprocess.run(["bash", str(CLUSTER), "stop", str(state)])
    os.environ.pop("SLURM_CONF", None)


#: The steps that ask a cluster for a GPU: the step table's GPU steps that leave the submitting
#: machine (each has its entry in the Slurm profile's set-resources: tests/test_table.py).
GPU_JOBS = [name for name, step in STEPS.items() if step.gpu and not step.local]

# The slurm profile asks for GPUs and a partition placeholder; this one-node test cluster has
# neither, so the test overrides exactly those, and nothing else of the profile.
OVERRIDES = ["--default-resources", "slurm_partition=debug", "mem_mb=500", "runtime=30",
             "--set-resources", *[f"{r}:{k}={v}" for r in GPU_JOBS
                                  for k, v in (("gpu", 0), ("mem_mb", 1000), ("cpus_per_gpu", 0))],
             "--set-threads", *[f"{r}=1" for r in GPU_JOBS],  # the test node has 2 CPUs
             "--slurm-status-command", "squeue", "--slurm-no-account",
             "--slurm-init-seconds-before-status-checks", "1"]


@pytest.fixture(scope="module")
def slurm_run(slurm, tmp_path_factory, shipped_config, demo_root):
    """The tiny pipeline (one model) run by Snakemake's Slurm executor: (project, its output)."""
    config = shrink(shipped_config, demo_root, results="results/tiny")
    config["models"] = {"a": config["models"]["a"]}
    project = make_project(tmp_path_factory.mktemp("slurmrun") / "project", config)
    proc = sh(["snakemake", "submission", "--workflow-profile", "workflow/profiles/slurm", *OVERRIDES],
              project)
    return project, proc


def test_snakemake_on_slurm_makes_a_valid_submission(slurm_run, demo_root):
    project, proc = slurm_run
    sub = pd.read_csv(project / "results" / "tiny" / "submission.csv")
    assert list(sub["ImageID"]) == list(pd.read_csv(demo_root / "eval" / "info.csv")["ImageID"])
    # the GPU steps went through Slurm; the cheap steps are localrules and ran here
    submitted = re.findall(r"submitted with SLURM jobid \d+ \(log: \S+/slurm_logs/rule_(\w+)/",
                           proc.stdout + proc.stderr)
    assert sorted(set(submitted)) == ["crop", "predict", "train"]


def test_dvc_repro_inside_a_slurm_job(slurm_run, tmp_path):
    """`dvc repro` as a Slurm job (`sbatch --wait`), on a copy of the run above recorded by `dvc
    commit`: after an ensemble edit the job reruns the ensemble and what follows (not the
    training: the edit does not reach it), writes the submission, and leaves DVC clean."""
    project = tmp_path / "dvcproject"
    shutil.copytree(slurm_run[0], project, symlinks=True, ignore=shutil.ignore_patterns(".snakemake"))
    (project / ".gitignore").write_text("/results/\n/.snakemake/\n")
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["maskpipe", "dvc-yaml"],
                ["dvc", "commit", "--force", "-q"]):
        sh(cmd, project)
    (project / "results" / "tiny" / "submission.csv").unlink()
    config = project / "config.yaml"
    config.write_text(config.read_text().replace("method: soft", "method: hard", 1))
    assert "method: hard" in config.read_text()
    # the edited stage; the deleted submission's writer and its reader
    assert dvc_changed(project) == {"ensemble", "submit", "report"}
    out = sh(["sbatch", "--parsable", "--wait", "-o", "dvc-job.log", "--wrap", "dvc repro"], project)
    job = out.stdout.strip().split(";")[0]
    assert job.isdigit()
    log = (project / "dvc-job.log").read_text()
    assert (project / "results" / "tiny" / "submission.csv").is_file(), log
    ran = set(re.findall(r"Running stage '([^']+)'", log))
    assert {"ensemble", "submit"} <= ran and not {s for s in ran if s.startswith(("train", "predict"))}, log
    assert dvc_changed(project) == set()


def test_a_required_slurm_fails_instead_of_skipping(monkeypatch):
    """The switch .ci/run sets turns "Slurm is missing" into a failure."""
    monkeypatch.setenv("MASKPIPE_REQUIRE_SLURM", "1")
    with pytest.raises(pytest.fail.Exception, match="MASKPIPE_REQUIRE_SLURM=1 but no slurmd"):
        unavailable("no slurmd")
    monkeypatch.delenv("MASKPIPE_REQUIRE_SLURM")
    with pytest.raises(pytest.skip.Exception, match="no slurmd"):
        unavailable("no slurmd")
    assert "export MASKPIPE_REQUIRE_SLURM=1" in (REPO / ".ci" / "run").read_text()
