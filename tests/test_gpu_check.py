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
    assert re.search(r"validate \d+s crop \d+s persons \d+s .* ensemble \d+s submit \d+s", table), table
    assert re.search(r"\d+\.\d min \(\d+\.\d min at 1 epochs\)", table), table
    # the pipeline really ran from crop to submission, with the config the script wrote
    submission = work / "pipeline" / "results" / "submission.csv"
    assert len(submission.read_text().splitlines()) == 1 + 8


def test_a_pipeline_stopped_at_its_limit_still_reports_what_finished(smoke, tmp_path, monkeypatch):
    """The time limit's SIGTERM, here as the first predict job starts: the rows of what finished
    and a projection from the folds trained, saying what it could not count."""
    import maskpipe.cli

    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "bench" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    real = maskpipe.cli.main

    def main(argv):
        if argv[0] == "predict":
            os.kill(os.getpid(), signal.SIGTERM)
        return real(argv)

    monkeypatch.setattr(maskpipe.cli, "main", main)
    rows = tmp_path / "rows.tsv"
    before = signal.getsignal(signal.SIGTERM)
    try:
        gpu_check.main(["pipeline", "--rows", str(rows), "--work", str(tmp_path / "pipeline"),
                        "--data", str(smoke[0] / "data"), "--crop-size", "40", "32",
                        "--arch", "test_resnet", "--image-size", "32", "32", "--folds", "2",
                        "--epochs", "1", "--full-epochs", "2", "--batch", "16", "--num-workers", "0"])
    finally:
        signal.signal(signal.SIGTERM, before)
    text = rows.read_text()
    assert re.search(r"stopped at its limit\tafter (\d+) of (\d+) jobs \(next: predict\)", text), text
    assert "training img/s (last epoch, mean of 2 folds)" in text
    assert re.search(r"projection\t.*\t\d+\.\d min .*not reached, not counted: predict, ensemble, "
                     r"submit\)", text), text
    assert not (tmp_path / "pipeline" / "results" / "submission.csv").exists()
