"""bench/gpu_check.sh in its CPU smoke mode: the GPU check cannot rot between GPU runs."""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[Path, str]:
    """The script's CPU smoke run: (its work folder, the table it printed)."""
    work = tmp_path_factory.mktemp("gpu_check")
    env = {**os.environ, "GPU_CHECK_WORK": str(work), "PYTHON": sys.executable,
           "PYTHONPATH": str(REPO / "src")}
    out = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), "--cpu-smoke"], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return work, out.stdout


def test_the_gpu_check_runs_on_a_cpu_and_prints_its_table(smoke):
    work, table = smoke
    assert "FAILED" not in table and "stopped at its limit" not in table, table
    lines = {line.split()[0] for line in table.splitlines()[2:] if line.strip()}
    assert {"train", "pipeline", "crop", "GPU", "projection", "time"} <= lines, table
    assert re.search(r"train img/s .*fp32 \d+, bf16\+channels_last \d+: \d+\.\d\dx", table), table
    # every step `snakemake submission` runs is timed, the persons step too
    assert re.search(r"validate \d+s crop \d+s labels \d+s folds \d+s persons \d+s .* ensemble \d+s submit \d+s", table), table
    assert re.search(r"\d+\.\d min \(\d+\.\d min measured at 1 epochs\)", table), table
    # the pipeline really ran from crop to submission, with the config the script wrote
    submission = work / "pipeline" / "results" / "submission.csv"
    assert len(submission.read_text().splitlines()) == 1 + 8


def test_a_pipeline_stopped_at_its_limit_still_reports_what_finished(smoke, tmp_path, monkeypatch):
    """The part's deadline (its SIGALRM), here in the second fold's first training batch, with
    DataLoader workers running: the rows of what finished and a projection from the fold
    trained, saying what it could not count."""
    import maskpipe.dag.runner as runner
    import maskpipe.train.loop as loop

    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "bench" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    real_run, real_to, trains = runner.run_job, loop._to, []

    def run_job(job, config_files):
        trains.extend([job.step] if job.step == "train" else [])
        return real_run(job, config_files)

    def to(x, device, channels_last=False):
        if len(trains) == 2:
            trains.append("stopped")
            os.kill(os.getpid(), signal.SIGALRM)  # as the deadline's timer would
        return real_to(x, device, channels_last)

    monkeypatch.setattr(runner, "run_job", run_job)
    monkeypatch.setattr(loop, "_to", to)
    rows = tmp_path / "rows.tsv"
    before = signal.getsignal(signal.SIGALRM)
    gpu_check.main(["pipeline", "--rows", str(rows), "--work", str(tmp_path / "pipeline"),
                    "--data", str(smoke[0] / "data"), "--crop-size", "40", "32",
                    "--arch", "test_resnet", "--image-size", "32", "32", "--folds", "2",
                    "--epochs", "1", "--full-epochs", "3", "--batch", "16", "--num-workers", "2",
                    "--limit", "600"])
    assert signal.getsignal(signal.SIGALRM) is before and signal.getitimer(signal.ITIMER_REAL)[0] == 0
    text = rows.read_text()
    assert trains == ["train", "train", "stopped"]
    stopped = re.search(r"stopped at its limit\tafter (\d+) of (\d+) jobs \(600 s; next: train\)", text)
    assert stopped and int(stopped[1]) < int(stopped[2]), text
    assert "training img/s (last epoch, mean of 1 folds)" in text
    assert re.search(r"projection\t.*\t\d+\.\d min \(\d+\.\d min measured at 1 epochs, of \d+ of \d+ "
                     r"jobs; not reached, not counted: predict, ensemble, submit\)", text), text
    assert not (tmp_path / "pipeline" / "results" / "submission.csv").exists()
