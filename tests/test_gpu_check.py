"""bench/gpu_check.sh in its CPU smoke mode: the GPU check cannot rot between GPU runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_gpu_check_runs_on_a_cpu_and_prints_its_table(tmp_path):
    env = {**os.environ, "GPU_CHECK_WORK": str(tmp_path), "PYTHON": sys.executable,
           "PYTHONPATH": str(REPO / "src")}
    out = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), "--cpu-smoke"], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    table = out.stdout
    assert "FAILED" not in table and "stopped at its limit" not in table, table
    lines = {line.split()[0] for line in table.splitlines()[2:] if line.strip()}
    assert {"train", "pipeline", "crop", "GPU", "projection", "time"} <= lines, table
    assert re.search(r"train img/s .*fp32 \d+, bf16\+channels_last \d+: \d+\.\d\dx", table), table
    assert "submit" in table and "min (measured" in table
    # the pipeline really ran from crop to submission, with the config the script wrote
    submission = tmp_path / "pipeline" / "results" / "submission.csv"
    assert len(submission.read_text().splitlines()) == 1 + 8
