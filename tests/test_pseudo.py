"""Pseudo-label rounds: which eval photos pass, and a real round 2 on the tiny run's results."""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml

from maskpipe.classes import PROB_COLUMNS, encode
from maskpipe.config import validate
from maskpipe.io import MaskpipeError
from maskpipe.layout import Layout
from maskpipe.dag.jobs import ordered_jobs, resolve
from maskpipe.dag.runner import run_job
from maskpipe.pseudo import select, summarise
from maskpipe.train.build import pseudo_split, split_fold

from conftest import shrink


def _probs(rows: list[dict[int, float]]) -> pd.DataFrame:
    p = np.zeros((len(rows), len(PROB_COLUMNS)))
    for i, row in enumerate(rows):
        for k, v in row.items():
            p[i, k] = v
    return pd.concat([pd.DataFrame({"key": [f"k{i}" for i in range(len(rows))]}),
                      pd.DataFrame(p, columns=PROB_COLUMNS)], axis=1)


def test_the_18_class_threshold_and_every_task_threshold_must_pass():
    wear_male_young, wear_male_mid = encode(0, 0, 0), encode(0, 0, 1)
    probs = _probs([
        {wear_male_young: 0.95, wear_male_mid: 0.05},  # sure of everything
        {wear_male_young: 0.85, wear_male_mid: 0.15},  # below the 18-class threshold
        {wear_male_young: 0.91, encode(1, 0, 0): 0.09},  # mask only 0.91 sure
    ])
    table, per_task = select(probs, 0.9, None)
    assert table["passed"].tolist() == [True, False, True]
    assert table["label"].tolist() == [wear_male_young] * 3
    table, per_task = select(probs, 0.9, {"mask": 0.95, "age": 0.9})
    assert table["passed"].tolist() == [True, False, False]
    # the label's own class of each task: age <30 holds 0.85 in row 2, mask "wear" 0.91 in row 3
    assert table["age_confidence"].round(6).tolist() == [0.95, 0.85, 1.0]
    assert per_task["mask"].tolist() == [True, True, False]
    summary = summarise(table, per_task, 0.9, {"mask": 0.95, "age": 0.9})
    assert summary["pseudo_labelled"] == 1 and summary["eval_photos"] == 3
    assert summary["per_class"]["wear/male/<30"] == 1 and sum(summary["per_class"].values()) == 1
    assert summary["passed_task_threshold"] == {"mask": 2, "age": 2}


def test_pseudo_models_must_name_models(shipped_config):
    cfg = copy.deepcopy(shipped_config)
    cfg["pseudo"] = {"models": ["nope"]}
    with pytest.raises(MaskpipeError, match=r"pseudo.models: 'nope' is not a model"):
        validate(cfg)


@pytest.fixture(scope="module")
def round2(tiny_run, tmp_path_factory):
    """The tiny run's results copied, then pseudo-label round 2 (model a trained again) run on
    them through the table, in-process, as the engines would: (config, base layout, threshold)."""
    config_path, first = tiny_run
    work = tmp_path_factory.mktemp("pseudo")
    shutil.copytree(first.results, work / "results")
    cfg = yaml.safe_load(config_path.read_text())
    cfg["results"] = str(work / "results")
    # The median confidence: some eval photos pass, some do not.
    test = pd.read_csv(Layout(cfg["results"]).ensemble_test())
    threshold = float(np.median(test[PROB_COLUMNS].to_numpy().max(1)))
    cfg["pseudo"] = {"rounds": 1, "threshold": threshold, "models": ["a"]}
    raw = validate(copy.deepcopy(cfg))
    round_steps = {"pseudo", "retrain", "repredict", "reensemble", "submit", "report"}
    (work / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    for step, job in ordered_jobs(raw):
        if step.name in round_steps:
            run_job(resolve(step, raw, **job), [work / "config.yaml"])
    return raw, Layout(cfg["results"]), threshold


def test_round_2_trains_on_exactly_the_confident_eval_photos(round2):
    raw, L, threshold = round2
    r2 = L.round(2)
    test = pd.read_csv(L.ensemble_test(), dtype={"key": str})
    sure = set(test.loc[test[PROB_COLUMNS].to_numpy().max(1) >= threshold, "key"])
    labels = pd.read_csv(r2.pseudo_labels(), dtype={"key": str})
    assert set(labels["key"]) == sure and 0 < len(sure) < len(test)
    assert (labels["label"] == test.set_index("key").loc[labels["key"], PROB_COLUMNS].to_numpy().argmax(1)).all()
    for fold in (0, 1):
        one, two = (json.loads(open(x.train_metrics("a", fold)).read()) for x in (L, r2))
        assert two["n_pseudo"] == len(sure) and two["n_train"] == one["n_train"] + len(sure)
        assert two["n_val"] == one["n_val"]  # validation is the fold's, without eval photos
        oof1, oof2 = (pd.read_csv(x.oof("a", fold), dtype={"key": str}) for x in (L, r2))
        assert set(oof2["key"]) == set(oof1["key"]) and not set(oof2["key"]) & set(test["key"])
    # what the training job was given: the fold's rows plus eval rows that no fold validates on
    tr, va = split_fold(L.crop_index("train"), L.labels(), L.folds(), 0, raw["models"]["a"], "models.a")
    extra = pseudo_split(L.crop_index("eval"), r2.pseudo_labels(), raw["models"]["a"])
    assert set(extra["key"]) == sure and not set(extra["key"]) & (set(va["key"]) | set(tr["key"]))


def test_round_2_files_exist_and_the_submission_is_round_2s(round2):
    raw, L, _ = round2
    r2 = L.round(2)
    for path in (r2.pseudo_summary(), r2.checkpoint("a", 0), r2.test_probs("a", 1), r2.metrics()):
        assert open(path, "rb").read(1), path
    with pytest.raises(FileNotFoundError):
        open(r2.checkpoint("b", 0))  # model b is not trained again
    sub = pd.read_csv(L.submission(), dtype={"ImageID": str}).set_index("ImageID")
    ens = pd.read_csv(r2.ensemble_test(), dtype={"key": str}).set_index("key")
    assert (sub.loc[ens.index, "ans"].to_numpy() == ens[PROB_COLUMNS].to_numpy().argmax(1)).all()
    summary = json.loads(open(r2.pseudo_summary()).read())
    html = open(L.report()).read()
    assert "Pseudo-label rounds" in html and f"<td class=\"num\">{summary['pseudo_labelled']}</td>" in html


def test_rounds_run_in_order(demo_root, shipped_config):
    """`ordered_jobs` (the tests' runner's order) puts round 3's steps after round 2's."""
    cfg = shrink(shipped_config, demo_root)
    cfg["pseudo"] = {"rounds": 2}
    names = [(s.name, j.get("round")) for s, j in ordered_jobs(validate(cfg)) if s.rounds]
    assert [n for n in names if n[0] == "pseudo"] == [("pseudo", 2), ("pseudo", 3)]
    assert names.index(("reensemble", 2)) < names.index(("pseudo", 3)) < names.index(("retrain", 3))


def test_pseudo_rows_follow_the_model_and_name_a_missing_crop(tmp_path):
    index, labels = tmp_path / "eval.csv", tmp_path / "labels.csv"
    pd.DataFrame({"key": ["e0", "e1", "e2"], "row": [0, 1, 2]}).to_csv(index, index=False)
    chosen = [encode(0, 1, 2), encode(1, 0, 1), encode(2, 1, 0)]  # wear, incorrect, not wear
    pd.DataFrame({"key": ["e0", "e1", "e2"], "label": chosen}).to_csv(labels, index=False)
    every = pseudo_split(index, labels, {"for_mask": None})
    assert every["row"].tolist() == [0, 1, 2] and every["train_label"].tolist() == chosen
    incorrect = pseudo_split(index, labels, {"for_mask": "incorrect"})
    assert incorrect["key"].tolist() == ["e1"]
    pd.DataFrame({"key": ["e9"], "label": [0]}).to_csv(labels, index=False)
    with pytest.raises(MaskpipeError, match=r"labels.csv: eval photo 'e9' is not in .*eval.csv"):
        pseudo_split(index, labels, {"for_mask": None})
