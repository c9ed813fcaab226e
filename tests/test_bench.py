"""Every benchmark script runs: tiny arguments on the tiny demo run, its figures and ratio printed
(the real-faces ones, bench/persons.py and bench/detect_rates.py: tests/test_bench_realfaces.py).

The scripts run in this process (conftest's ``bench``); nothing here times anything, the figures
are only checked to be there.
"""

from __future__ import annotations

import re

import pandas as pd
import torch

from maskpipe.devices import resolve_workers

FIGURE = r"\d+\.\d+"


def test_loader_bench_prints_both_feeds_and_their_ratio(bench, tiny_run, demo_root):
    config, L = tiny_run
    out = bench("loader", "--results", L.results, "--data", demo_root, "--config", config,
                "--epochs", 1, "--batch-size", 16, "--size", 32, 32)
    assert re.search(rf"naive \(PIL full photo each epoch\): +{FIGURE} img/s", out), out
    assert re.search(rf"maskpipe \(memory-mapped crops\): +{FIGURE} img/s", out), out
    assert re.search(rf"^speed-up: {FIGURE}x", out, re.M), out


def test_crop_bench_prints_three_rows_with_faces_and_the_ratio(bench, tiny_run, demo_root):
    config, _ = tiny_run
    out = bench("crop", "--data", demo_root, "--images", 4, "--config", config, "--workers", 1)
    assert "file cache warmed" in out
    rows = re.findall(rf"^([123]) .*: +{FIGURE} img/s  \((\d+)/4 faces", out, re.M)
    assert [r[0] for r in rows] == ["1", "2", "3"], out
    assert re.search(rf"^speed-up 3 vs 1: {FIGURE}x .*2 vs 1\): {FIGURE}x; .*3 vs 2\): {FIGURE}x", out, re.M), out


def test_train_bench_prints_both_modes_and_their_ratio(bench):
    out = bench("train", "--arch", "test_resnet", "--size", 32, "--batch", 4, "--steps", 1)
    assert re.search(rf"^fp32: +{FIGURE} img/s", out, re.M), out
    assert re.search(rf"^bf16 \+ channels_last: +{FIGURE} img/s", out, re.M), out
    assert re.search(rf"^ratio: {FIGURE}x", out, re.M), out


def test_train_bench_prints_the_pipelines_feed_against_the_bare_step(bench, tiny_run):
    config, L = tiny_run
    out = bench("train", "--results", L.results, "--config", config, "--workers", "0", "auto",
                "--images", 16, "--steps", 1)
    assert re.search(rf"^bare step \(batch in memory\): +{FIGURE} img/s", out, re.M), out
    rows = re.findall(rf"^pipeline, num_workers (\S+(?: \(= \d+\))?): +{FIGURE} img/s  \({FIGURE} of the bare step\)",
                      out, re.M)
    auto = resolve_workers("auto", "cuda" if torch.cuda.is_available() else "cpu")
    assert rows == ["0", f"auto (= {auto})"], out


def test_mislabels_bench_measures_a_finished_run(bench, tiny_run, tmp_path):
    """The ``--results`` mode on the tiny run, two of its persons declared planted (the full mode
    generates data and runs Snakemake: an engine run, too slow for a smoke test)."""
    _, L = tiny_run
    persons = pd.read_csv(L.labels(), dtype={"person": str})["person"].drop_duplicates().head(2)
    planted = pd.DataFrame({"person": persons, "id": persons, "kind": ["gender", "age"],
                            "given": "x", "truth": "y"})
    planted.to_csv(tmp_path / "planted_errors.csv", index=False)
    out = bench("mislabels", "--results", L.results, "--planted", tmp_path / "planted_errors.csv")
    assert "planted person-level errors: 2" in out
    assert len(re.findall(r"recall ratio cleanlab / naive: (\d+\.\d+x|infx)", out)) == 2, out
    assert re.search(rf"mislabels \(cleanlab\) +recall {FIGURE} \(\d+/2\)", out), out
