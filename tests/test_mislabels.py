"""The mislabels step: cleanlab ranking per task, the review page, accepting fixes."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from maskpipe import classes
from maskpipe.cli import main as cli_main
from maskpipe.io import MaskpipeError
from maskpipe.data.labels import apply_corrections, read_corrections
from maskpipe.mislabels import accept
from maskpipe.demo.truth import baseline_scores, ranking_scores
from maskpipe.mislabels.rank import nearest_age, rank_suspects, task_probs

from conftest import REPO

SURE = 0.9


def _one(k: int, n: int, p: float = SURE) -> np.ndarray:
    v = np.full(n, (1 - p) / (n - 1))
    v[k] = p
    return v


def _photos(person: str, gender: int, age: int, seen: dict | None = None) -> tuple[list[dict], list[np.ndarray]]:
    """A person's 7 photos as labelled, and probabilities that see ``seen`` (default: the labels)."""
    seen = seen or {}
    rows, probs = [], []
    for stem in classes.IMAGE_STEMS:
        mask = classes.MASK_BY_STEM[stem]
        m = seen.get(stem, mask)
        pm, pg, pa = _one(m, 3), _one(seen.get("gender", gender), 2), _one(seen.get("age_group", int(classes.age_bin(age))), 3)
        probs.append(np.einsum("m,g,a->mga", pm, pg, pa).ravel())
        rows.append({"key": f"{person}/{stem}", "person": person, "stem": stem, "mask": mask,
                     "gender_id": gender, "age": age, "age_group": int(classes.age_bin(age))})
    return rows, probs


def _table(*persons) -> tuple[pd.DataFrame, np.ndarray]:
    rows, probs = [], []
    for args in persons:
        r, p = _photos(*args)
        rows += r
        probs += p
    return pd.DataFrame(rows), np.array(probs)


@pytest.fixture(scope="module")
def ranked() -> pd.DataFrame:
    table, probs = _table(
        ("000001_male_Asian_25", 0, 25, {"gender": 1}),                      # photos show a woman
        ("000003_female_Asian_45", 1, 45, {"age_group": 0}),                 # photos show someone young
        ("000005_male_Asian_60", 0, 60, {"incorrect_mask": 2, "normal": 1}),  # files exchanged
        ("000007_female_Asian_33", 1, 33, {"mask2": 2}),                     # one photo without a mask
        ("000009_male_Asian_52", 0, 52),                                     # all agree
        ("000011_female_Asian_21", 1, 21),
    )
    return rank_suspects(table, probs)


def test_task_probabilities_are_the_marginals_of_the_18_classes():
    p = np.random.default_rng(0).dirichlet(np.ones(18), size=5)
    tp = task_probs(p)
    m, g, a = classes.decode(np.arange(18))
    for task, code in (("mask", m), ("gender", g), ("age", a)):
        expected = np.stack([p[:, code == k].sum(axis=1) for k in range(classes.TASKS[task])], axis=1)
        assert np.allclose(tp[task], expected)


def test_each_kind_of_error_is_found_at_its_level(ranked):
    by = ranked.set_index("suspect")
    assert set(by.index) == {"000001_male_Asian_25:gender", "000003_female_Asian_45:age",
                             "000005_male_Asian_60:swap", "000007_female_Asian_33:mask:mask2"}
    assert tuple(by.loc["000001_male_Asian_25:gender", ["given", "suggested", "fix_kind", "fix_value"]]) == \
        ("male", "female", "gender", "female")
    assert tuple(by.loc["000003_female_Asian_45:age", ["suggested", "fix_kind", "fix_value"]]) == ("<30", "age", "29")
    swap = by.loc["000005_male_Asian_60:swap"]
    assert (swap["fix_kind"], swap["fix_value"], swap["suggested"]) == ("swap_incorrect_normal", "true", "swapped")
    assert swap["p_suggested"] > 0.99  # the exchanged assignment explains both photos
    # the two swapped photos are one suspect, not two photo-level mask suspects
    assert not ranked["suspect"].str.startswith("000005_male_Asian_60:mask").any()
    assert tuple(by.loc["000007_female_Asian_33:mask:mask2", ["fix_kind", "fix_value"]]) == ("drop_image", "mask2")


def test_ranking_is_by_cleanlab_quality_and_stable(ranked):
    assert ranked["rank"].tolist() == list(range(1, len(ranked) + 1))
    assert ranked["score"].is_monotonic_increasing and (ranked["score"] < 0.5).all()
    assert (ranked["accept"] == "").all()
    again = rank_suspects(*_table(("000001_male_Asian_25", 0, 25, {"gender": 1})))
    assert again["suspect"].tolist() == ["000001_male_Asian_25:gender"]


def test_a_more_certain_error_ranks_first():
    table, probs = _table(("000001_male_Asian_25", 0, 25, {"gender": 1}), ("000003_male_Asian_25", 0, 25))
    # the second person's photos lean towards female only a little
    probs[7:] = np.array([np.einsum("m,g,a->mga", _one(classes.MASK_BY_STEM[s], 3), _one(1, 2, 0.6),
                                    _one(0, 3)).ravel() for s in classes.IMAGE_STEMS])
    out = rank_suspects(table, probs)
    assert out["person"].tolist() == ["000001_male_Asian_25", "000003_male_Asian_25"]


@pytest.mark.parametrize("age, group, expected", [(45, 0, 29), (25, 1, 30), (60, 1, 59), (25, 2, 60), (33, 1, 33)])
def test_age_fix_is_the_nearest_age_of_the_suggested_group(age, group, expected):
    assert nearest_age(age, group) == expected


def test_planted_scores_count_person_and_task(ranked):
    planted = pd.DataFrame({"person": ["000001_male_Asian_25", "000005_male_Asian_60", "000009_male_Asian_52"],
                            "kind": ["gender", "swap_incorrect_normal", "age"]})
    s = ranking_scores(ranked, planted, cut=4)
    assert (s["found"], s["planted"], s["precision"]) == (2, 3, 0.5)
    wrong_task = planted.assign(kind=["age", "gender", "age"])
    assert ranking_scores(ranked, wrong_task, cut=4)["found"] == 0


def test_naive_baseline_ranks_persons_by_their_surest_mistake():
    oof = pd.DataFrame({"person": ["a", "a", "b", "c"], "label": [0, 0, 0, 0]})
    probs = np.zeros((4, 18))
    probs[0, 0], probs[1, 3], probs[2, 5], probs[3, 0] = 1, 0.6, 0.9, 1
    probs[1, 0], probs[2, 0] = 0.4, 0.1
    oof = pd.concat([oof, pd.DataFrame(probs, columns=[f"p{c:02d}" for c in range(18)])], axis=1)
    planted = pd.DataFrame({"person": ["a"], "kind": ["gender"]})
    assert baseline_scores(oof, planted, cut=1)["found"] == 0  # b's mistake is surer
    assert baseline_scores(oof, planted, cut=2)["found"] == 1


# --- accepting -----------------------------------------------------------------------------


def _suspects_csv(ranked, tmp_path) -> pd.DataFrame:
    return pd.read_csv(_write(ranked, tmp_path / "suspects.csv"), dtype=str, keep_default_na=False)


def _write(df, path):
    df.to_csv(path, index=False)
    return path


SUMMARY = {"method": "normalized_margin", "oof_macro_f1": 0.8123}


def test_accepted_fixes_are_appended_with_their_reason(ranked, tmp_path):
    suspects = _suspects_csv(ranked, tmp_path)
    chosen = accept.select(suspects, ["000001_male_Asian_25", "000005_male_Asian_60:swap"], "s.csv")
    fixes = accept.fixes_for(chosen, SUMMARY)
    path = tmp_path / "corrections.yaml"
    assert accept.append_fixes(path, fixes, "suspects.csv") == 2  # created: no file yet
    parsed = read_corrections(path)
    assert [f["person"] for f in parsed] == ["000001_male_Asian_25", "000005_male_Asian_60"]
    assert parsed[0]["gender"] == "female" and parsed[1]["swap_incorrect_normal"] is True
    assert parsed[0]["reason"].startswith("mislabels: gender male -> female, p=")
    assert "OOF macro F1 0.8123 when ranked" in parsed[0]["reason"]
    # accepting the same again changes nothing; a contradicting fix is refused with its line
    before = path.read_bytes()
    assert accept.append_fixes(path, fixes, "suspects.csv") == 0 and path.read_bytes() == before
    clash = [{"person": "000001_male_Asian_25", "gender": "male", "reason": "x"}]
    with pytest.raises(MaskpipeError, match=rf"{path}:\d+: 000001_male_Asian_25 already has a gender fix"):
        accept.append_fixes(path, clash, "suspects.csv")
    assert path.read_bytes() == before


def test_appending_keeps_an_existing_file_byte_for_byte(ranked, tmp_path):
    path = tmp_path / "competition.yaml"
    shutil.copy(REPO / "workflow" / "resources" / "corrections" / "competition.yaml", path)
    original = path.read_bytes()
    n = len(read_corrections(path))
    suspects = _suspects_csv(ranked, tmp_path)
    fixes = accept.fixes_for(accept.select(suspects, ["000003_female_Asian_45"], "s.csv"), SUMMARY)
    assert accept.append_fixes(path, fixes, "suspects.csv") == 1
    assert path.read_bytes().startswith(original)
    parsed = read_corrections(path)
    assert len(parsed) == n + 1 and parsed[-1]["age"] == 29


@pytest.mark.parametrize("text", ["fixes: []\n", "# only a comment\n", "", "fixes: []\n\n# keep me\n"])
def test_appending_to_an_empty_corrections_file(ranked, tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    suspects = _suspects_csv(ranked, tmp_path)
    fixes = accept.fixes_for(accept.select(suspects, ["000001_male_Asian_25"], "s.csv"), SUMMARY)
    assert accept.append_fixes(path, fixes, "s.csv") == 1
    assert [f["gender"] for f in read_corrections(path)] == ["female"]
    assert all(line in path.read_text() for line in text.splitlines() if line.startswith("#"))


def test_selection_errors_name_the_file(ranked, tmp_path):
    suspects = _suspects_csv(ranked, tmp_path)
    with pytest.raises(MaskpipeError, match="s.csv: no suspect 'nobody'"):
        accept.select(suspects, ["nobody"], "s.csv")
    gender = suspects[suspects["person"] == "000001_male_Asian_25"]
    two = pd.concat([suspects, gender.assign(suspect="000001_male_Asian_25:age", task="age")])
    with pytest.raises(MaskpipeError, match="has 2 suspects"):
        accept.select(two, ["000001_male_Asian_25"], "s.csv")
    marked = suspects.assign(accept=["yes", "", "X", ""])
    assert accept.marked(marked)["suspect"].tolist() == suspects["suspect"].iloc[[0, 2]].tolist()


# --- on the tiny pipeline run --------------------------------------------------------------


def test_tiny_run_writes_suspects_review_and_summary(tiny_run):
    _, L = tiny_run
    suspects = pd.read_csv(L.mislabels_suspects(), dtype=str, keep_default_na=False)
    assert list(suspects.columns) == ["rank", "suspect", "person", "task", "image", "given", "suggested",
                                      "score", "p_suggested", "flagged", "fix_kind", "fix_value", "accept"]
    summary = yaml.safe_load(Path(L.mislabels_summary()).read_text())
    assert summary["suspects"] == len(suspects) and 0 <= summary["oof_macro_f1"] <= 1
    page = Path(L.mislabels_review()).read_text()
    shown = min(len(suspects), 40)
    assert page.count('<div class="s" id="r') == shown
    assert page.count("data:image/png;base64,") >= 7 * shown  # every photo of each shown suspect


def test_accept_without_a_corrections_file_is_a_clear_error(tiny_run, capsys):
    config_path, L = tiny_run
    assert cli_main(["mislabels", "--config", str(config_path), "--accept", "x"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("maskpipe mislabels: error: labels.corrections is null")


def test_accepting_changes_the_labels_step_output(tiny_run, tmp_path):
    """Accept a fix, rerun the labels step: the corrected person's labels change, nothing else."""
    config_path, L = tiny_run
    cfg = yaml.safe_load(config_path.read_text())
    cfg["labels"]["corrections"] = str(tmp_path / "corrections.yaml")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    # A suspect for a known person, written in the step's format, so the test does not depend on
    # what the one-epoch models happen to disagree with.
    labels = pd.read_csv(L.labels(), dtype={"key": str, "id": str})
    person = labels["person"].iloc[0]
    gender = labels["gender"].iloc[0]
    other = "female" if gender == "male" else "male"
    suspects = pd.DataFrame([{"rank": 1, "suspect": f"{person}:gender", "person": person, "task": "gender",
                              "image": "", "given": gender, "suggested": other, "score": 0.01,
                              "p_suggested": 0.97, "flagged": True, "fix_kind": "gender",
                              "fix_value": other, "accept": "yes"}])
    _write(suspects, tmp_path / "suspects.csv")
    shutil.copy(L.mislabels_summary(), tmp_path / "summary.json")
    assert cli_main(["mislabels", "--config", str(config), "--suspects", str(tmp_path / "suspects.csv"),
                     "--accept-marked"]) == 0
    out = tmp_path / "labels.csv"
    assert cli_main(["labels", "--config", str(config), "--manifest", L.manifest("train"), "--out-labels", str(out),
                     "--out-applied", str(tmp_path / "applied.csv")]) == 0
    after = pd.read_csv(out, dtype={"key": str, "id": str})
    changed = after["label"] != labels["label"]
    assert set(after.loc[changed, "person"]) == {person} and changed.sum() == 7
    assert set(after.loc[after["person"] == person, "gender"]) == {other}
    applied = pd.read_csv(tmp_path / "applied.csv")
    assert applied["reason"].iloc[0].startswith("mislabels: gender")


# --- measured on a small real run with planted errors --------------------------------------


@pytest.mark.slow
def test_planted_errors_are_among_the_first_suspects(tmp_path_factory, shipped_config):
    """The issue's bar on a small real run: >= 90% of the planted person-level errors among the
    first 2 x (number planted) suspects, and no worse than the naive ranking of the same run.

    72 persons, 11 planted (15%), the shipped model at 48 px for 15 epochs on 2 folds: about 3
    minutes on 2 CPU cores. Fewer persons (36 train persons per fold is the floor found) leave the
    models too weak for any ranking to find the errors.
    """
    from conftest import run_pipeline

    from maskpipe.demo.synthetic import PLANTED_FILE, generate_demo

    work = tmp_path_factory.mktemp("planted")
    generate_demo(work / "data", persons=72, eval_images=4, seed=0, plant_errors=0.15)
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["data"]["root"] = str(work / "data")
    cfg["results"] = str(work / "results")
    cfg["folds"]["k"] = 2
    cfg["train"]["num_workers"] = 0
    cfg["models"]["demo"].update(epochs=15, image_size=[48, 48])
    _, L = run_pipeline(cfg, work, report=False)  # the suspects are what is measured
    suspects = pd.read_csv(L.mislabels_suspects(), dtype=str, keep_default_na=False)
    planted = pd.read_csv(work / "data" / PLANTED_FILE, dtype=str)
    oof = pd.read_csv(L.ensemble_oof(), dtype={"key": str, "person": str})
    ours, naive = ranking_scores(suspects, planted), baseline_scores(oof, planted)
    assert len(planted) == 11 and set(planted["kind"]) == {"gender", "age", "swap_incorrect_normal"}
    assert ours["recall"] >= 0.9, (ours, suspects.head(ours["cut"]))
    assert ours["recall"] >= naive["recall"]


def test_dropping_photos_of_one_person_adds_up(tmp_path):
    """drop_image fixes are a set per person: accepted one call at a time or together, the same."""
    path = tmp_path / "c.yaml"
    person = "000007_female_Asian_33"

    def drop(*stems):
        return accept.append_fixes(path, [{"person": person, "drop_image": s, "reason": "r"} for s in stems],
                                   "s.csv")

    assert drop("mask2") == 1 and drop("mask3") == 1
    assert drop("mask2") == 0  # already dropped
    path.write_text(path.read_text() + f"  - person: {person}\n    drop_image: [mask4, mask5]\n    reason: by hand\n")
    assert drop("mask5") == 0 and drop("normal") == 1
    assert [f["drop_image"] for f in read_corrections(path)] == ["mask2", "mask3", ["mask4", "mask5"], "normal"]
