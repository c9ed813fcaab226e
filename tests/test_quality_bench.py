"""Smoke test of bench/quality.py on a tiny realistic set (real faces from ../shared/realfaces/)."""

import importlib.util
import json
import re
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import every_group, link_real_faces

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quality():
    spec = importlib.util.spec_from_file_location("bench_quality", REPO / "bench" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    """~40 real faces of every group: labels.csv and symlinks to the shared photos (no copies;
    a few faces, so their landmarks are found in seconds)."""
    return link_real_faces(tmp_path_factory.mktemp("faces"), every_group(5))


def test_quality_bench_runs_rows_and_shares_work(tmp_path, quality, faces, monkeypatch, capsys):
    """Seven rows (TTA on, off, a pseudo-label round, the search's best, the from-scratch twin,
    multitask with the external faces, and with the teacher too) on 4 + 2 persons, from the
    packaged pretrained weights (the default regime): one table, scores in 0..1 with intervals
    around them, crop shares that add up, the rows with the same model config train nothing (no
    TTA; the teacher only votes), the pseudo row scores both rounds, the search ran its trials on
    every fold, the external faces were cropped once and joined the training rows of the model
    that takes them, the teacher estimated every eval photo, and the paired gains of the rows
    that ran are printed."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    table = quality.main(["--faces", str(faces), "--work", str(tmp_path / "q"), "--persons", "4",
                          "--eval-persons", "2", "--folds", "2", "--epochs", "1", "--image-size", "32",
                          "--rows", "1,2,7,8,10,11,13", "--search-trials", "2", "--min-age", "17"])
    numbers = [1, 2, 7, 8, 10, 11, 13]
    assert list(table["configuration"]) == [quality.ROWS[i - 1].name for i in numbers]
    assert list(table["#"]) == numbers  # the row numbers --rows takes
    marker = json.loads(next((tmp_path / "q").glob("data-*-min17/demo.json")).read_text())
    assert marker["priors"]["min_age"] == 17  # passed on to demo-data
    for cell in table["eval F1 95%"]:
        lo, hi = map(float, cell.strip("[]").split(","))
        assert 0 <= lo <= hi <= 1, cell
    for col in ("OOF F1", "eval F1", "eval mask", "eval gender", "eval age"):
        assert table[col].between(0, 1).all(), col
    assert (table["eval >=60 recall"].between(0, 1) | table["eval >=60 recall"].isna()).all()
    for col in ("train det/grp/fix", "eval det/grp/fix"):
        for shares in table[col]:
            assert 99 <= sum(map(int, shares.split("/"))) <= 101
    assert list(table["reused"]) == ["", "yes", "", "", "", "", "yes"]
    # the external faces: cropped once (rows 11 and 13), every unused face of the set, in the
    # training rows of the model that takes them
    q = tmp_path / "q"
    external, = q.glob("external/*/crops/external.csv")
    data, = q.glob("data-*-min17")
    assert len(external.read_text().splitlines()) == len((data / "external" / "labels.csv").read_text().splitlines())
    n_external = {}  # external_tasks of each multitask model trained -> its folds' external rows
    for metrics in q.glob("models/*/models/mt/fold*/metrics.json"):
        cfg = yaml.safe_load((q / "configs" / f"train-{metrics.parents[3].name}.yaml").read_text())
        tasks = tuple(cfg["models"]["mt"]["external_tasks"] or ())
        n_external.setdefault(tasks, set()).add(json.loads(metrics.read_text())["n_external"])
    assert n_external == {("gender", "age"): {len(external.read_text().splitlines()) - 1}}, n_external
    teacher, = q.glob("teacher/*/teacher/eval.csv")
    estimates = pd.read_csv(teacher)
    assert len(estimates) == 2 * 7 and set(estimates["source"]) <= {"own", "person", "none"}
    # row 10 trained the scratch regime's model, not the pretrained one at the scratch sizes
    models = [yaml.safe_load(p.read_text())["models"] for p in (tmp_path / "q" / "configs").glob("row-*.yaml")]
    twin = [m["a"] for m in models if "a" in m and m["a"]["arch"] == "resnet10t"]
    assert twin and all(m["image_size"] == [48, 48] and not m["pretrained"] and m["epochs"] == 6 for m in twin)
    # round 1 of the pseudo row is the first row's model and ensemble; round 2 trained again
    notes = table["notes"].iloc[numbers.index(7)]
    assert f"round 1 eval F1 {table['eval F1'].iloc[0]:.3f}" in notes, notes
    assert re.search(r"round 2 pseudo-labels \d+ \(\d+% right\)", notes), notes
    trials = pd.read_csv(tmp_path / "q" / "search" / "trials.csv")
    assert (trials["state"] == "COMPLETE").sum() == 2
    assert not {"params_image_size", "params_epochs"} & set(trials.columns)  # the rows' budget
    # each row also scored with the eval-only options: F1 difference and eval predictions changed
    for v in ("persons", "prior", "both"):
        for cell in table[f"{v} ±F1 [95%] (changed)"]:
            m = re.fullmatch(r"([+-]\d\.\d{3}) \[([+-]\d\.\d{3}),([+-]\d\.\d{3})\](\*?) \((\d+)\)", cell)
            assert m, cell
            delta, lo, hi, changed = float(m[1]), float(m[2]), float(m[3]), int(m[5])
            assert -1 <= lo <= hi <= 1 and 0 <= changed <= 2 * 7, cell
            assert (m[4] == "*") == (lo > 0 or hi < 0), cell
    out = capsys.readouterr().out
    assert ("Quality on real faces: 4 train persons, 2 eval persons, 2 folds, 1 epochs, 32 px, "
            "tf_efficientnet_lite0 (+ mobilenetv2_100), pretrained, ") in out
    assert "data seed 0, training seed 0" in out
    assert re.search(r"\| TTA \(hflip\) +\| 1 vs 2 +\| +[+-]\d\.\d{3} \| \[[+-]\d\.\d{3}, [+-]\d\.\d{3}\] \| (yes|no) ", out), out
    assert "| search's best config" in out and "| pseudo-label round 2 " in out
    assert "| pretrained weights (over the from-scratch twin) | 1 vs 10 " in out
    assert re.search(r"\|\s+2 \| 18-class model, no TTA", out), out
    # the eval set is made of persons: 7 photos each, all cropped
    assert len((tmp_path / "q").glob("crops/*/crops/eval.csv").__next__().read_text().splitlines()) == 1 + 2 * 7


def test_quality_bench_pairs_a_second_training_seed_and_counts_age_errors(tmp_path, quality, faces,
                                                                         monkeypatch, capsys):
    """Row 1 with seed 0, then with seed 1 on the same faces (--data-seed 0) against it: the
    second run finds the first's predictions by config and prints both figures and their paired
    difference; every run prints each row's eval age errors (none only where the age F1 is 1); a
    seed that never ran is said, not invented."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    common = ["--faces", str(faces), "--work", str(tmp_path / "q"), "--persons", "4", "--eval-persons", "2",
              "--folds", "2", "--epochs", "1", "--image-size", "32", "--rows", "1,2", "--min-age", "17"]
    first = quality.main(common)
    capsys.readouterr()
    second = quality.main([*common, "--seed", "1", "--data-seed", "0", "--against-seed", "0"])
    out = capsys.readouterr().out
    assert "data seed 0, training seed 1" in out
    section = out.split("Eval macro F1 against training seed 0")[1].split("Eval age errors")[0]
    for i, n in enumerate((1, 2)):
        m = re.search(rf"\|\s*{n}\s+\| [^|]+\|\s*(\d\.\d{{3}})\s+\|\s*(\d\.\d{{3}})\s+\|\s*([+-]\d\.\d{{3}})\s+\| "
                      r"\[([+-]\d\.\d{3}), ([+-]\d\.\d{3})\]\s+\| (yes|no)", section)
        assert m, section
        theirs, ours, diff, lo, hi = map(float, m.groups()[:5])
        assert theirs == pytest.approx(first["eval F1"].iloc[i], abs=5e-4)
        assert ours == pytest.approx(second["eval F1"].iloc[i], abs=5e-4)
        assert diff == pytest.approx(ours - theirs, abs=1e-3) and lo <= hi
    errors = out.split("Eval age errors")[1]
    counts = [list(map(int, re.findall(r"\|\s+(\d+)", line)))
              for line in errors.splitlines() if re.match(r"\|\s+\d", line)]
    assert [c[0] for c in counts] == [1, 2] and all(len(c) == 7 for c in counts), errors
    for c, age_f1 in zip(counts, second["eval age"], strict=True):
        assert 0 <= sum(c[1:]) <= 2 * 7 and (sum(c[1:]) == 0) == (age_f1 == 1), (c, age_f1)
    # a seed that never ran: said, not invented
    quality.main([*common, "--rows", "1", "--seed", "1", "--data-seed", "0", "--against-seed", "5"])
    assert "(none of the rows found)" in capsys.readouterr().out


def test_quality_bench_help_explains_every_option(quality, capsys):
    with pytest.raises(SystemExit):
        quality.main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "--folds FOLDS folds of every row" in out and "(default: 2)" in out
    assert "--regime {pretrained,scratch}" in out and "(default: pretrained)" in out
    assert "--min-age MIN_AGE demo-data's youngest face" in out and "(default: None)" not in out


def test_every_file_of_the_steps_the_bench_runs_has_a_folder(quality):
    """A step that gains a port (a file of a new Layout kind) must not stop the bench with a
    KeyError in the middle of a table: FOLDER places every port of every step it runs."""
    from maskpipe.dag.table import STEPS

    ports = [p for s in quality.RUNS for p in (*STEPS[s].inputs, *STEPS[s].outputs, *STEPS[s].options) if p.layout]
    assert ports
    for port in ports:
        assert quality.folder_kind(port) in set(quality.FOLDER.values()), port
