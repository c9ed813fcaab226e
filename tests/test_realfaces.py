"""demo-data --faces: competition-layout data from the real faces in ../shared/realfaces/.

The faces are research-only: the tests read them from the shared folder (through symlinks in a
temporary folder) and skip, saying why, where it is absent. ``assign_faces`` is also tested on a
table of made-up faces, which needs no photo.
"""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import AGE_RANGES, link_real_faces

from maskpipe.classes import IMAGE_STEMS, age_bin, decode
from maskpipe.cli import main as cli_main
from maskpipe.demo.competition import MARKER, PLANTED_FILE
from maskpipe.data.manifest import build_eval_manifest, build_train_manifest
from maskpipe.data.external import read_labels
from maskpipe.demo.realfaces import (DUPLICATES_FILE, EXTERNAL_DIR, FACES_FILE, Priors, assign_faces,
                                     generate_realfaces)
from maskpipe.io import MaskpipeError

# (gender, youngest, oldest): faces; enough for 12 train and 6 eval persons whatever the draws.
PICK = {(g, lo, hi): n for g in ("male", "female")
        for (lo, hi), n in zip(AGE_RANGES, (9, 9, 1, 3), strict=True)}
PERSONS, EVAL = 12, 6


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> Path:
    """A folder of ~30 real faces: labels.csv and symlinks to the shared photos (no copies)."""
    return link_real_faces(tmp_path_factory.mktemp("faces"), PICK)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache") / "landmarks.csv"


@pytest.fixture(scope="module")
def real(faces, cache, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("real") / "data"
    summary = generate_realfaces(root, faces, persons=PERSONS, eval_persons=EVAL, seed=0, landmark_cache=cache)
    assert summary["skipped"] is False and summary["train_images"] == 7 * PERSONS
    return root


def test_layout_tables_and_photos(real):
    train = pd.read_csv(real / "train" / "train.csv", dtype={"id": str})
    assert list(train.columns) == ["id", "gender", "race", "age", "path"] and len(train) == PERSONS
    assert list(train["path"]) == list(train["id"] + "_" + train["gender"] + "_Asian_" + train["age"].astype(str))
    for folder in train["path"]:
        files = sorted((real / "train" / "images" / folder).iterdir())
        assert sorted(f.stem for f in files) == sorted(IMAGE_STEMS) and len({f.suffix for f in files}) == 1
        for f in files:
            with Image.open(f) as im:
                assert im.size == (384, 512)
    info = pd.read_csv(real / "eval" / "info.csv")
    truth = pd.read_csv(real / "demo_truth.csv")
    assert list(truth.columns) == ["ImageID", "ans", "person"] and len(info) == 7 * EVAL
    assert list(info["ImageID"]) == list(truth["ImageID"]) and (info["ans"] == 0).all()
    assert all(re.fullmatch(r"[0-9a-f]{40}\.jpg", n) for n in info["ImageID"])
    assert list(truth["person"]) != sorted(truth["person"])  # shuffled, not seven in a row
    # The pipeline's own validation takes it as it takes the competition's data.
    assert len(build_train_manifest(real, workers=1)) == 7 * PERSONS
    assert len(build_eval_manifest(real, workers=1)) == 7 * EVAL
    for _, photos in truth.groupby("person"):  # one person: 5 wear, 1 incorrect, 1 normal; one label
        mask, gender, age = decode(photos["ans"].to_numpy())
        assert sorted(mask) == [0, 0, 0, 0, 0, 1, 2]
        assert len(set(gender)) == 1 and len(set(age)) == 1


def test_faces_never_reused_and_old_policy(real, faces):
    used = pd.read_csv(real / FACES_FILE)
    assert used["file"].is_unique and len(used) == PERSONS + EVAL
    labels = pd.read_csv(faces / "labels.csv").set_index("file")
    assert (used["age"].to_numpy() == labels.loc[used["file"], "age"].to_numpy()).all()
    train = pd.read_csv(real / "train" / "train.csv", dtype={"id": str}).set_index("path")
    tr = used[used["split"] == "train"].set_index("person")
    old = age_bin(train["age"].to_numpy()) == 2
    # Train's >=60 persons are faces aged 60-65 labelled 60; the others keep the face's age.
    assert (train.loc[old, "age"] == 60).all() and tr.loc[train.index[old], "age"].between(60, 65).all()
    assert (train.loc[~old, "age"].to_numpy() == tr.loc[train.index[~old], "age"].to_numpy()).all()
    assert (train["gender"].to_numpy() == labels.loc[tr.loc[train.index, "file"], "gender"].to_numpy()).all()
    # Default priors: round(0.61 * 12) = 7 female train persons, 1 of 12 aged >= 60.
    assert (train["gender"] == "female").sum() == 7 and old.sum() == 1
    # Eval: 60% male (3.6 -> 4 of 6), 25% aged 60+ (1.5 -> 1: the tie goes to the under-60s).
    truth = pd.read_csv(real / "demo_truth.csv").drop_duplicates("person")
    _, gender, age = decode(truth["ans"].to_numpy())
    assert (gender == 0).sum() == 4 and (age == 2).sum() == 1


def test_priors_change_the_tables(faces, cache, tmp_path):
    root = tmp_path / "skewed"
    priors = Priors(female_share=1.0, old_share=0.5, eval_male_share=1.0, eval_old_share=1.0)
    generate_realfaces(root, faces, persons=2, eval_persons=3, seed=1, priors=priors, landmark_cache=cache)
    train = pd.read_csv(root / "train" / "train.csv")
    assert (train["gender"] == "female").all() and sorted(train["age"] >= 60) == [False, True]
    used = pd.read_csv(root / FACES_FILE).set_index("split")
    _, gender, age = decode(pd.read_csv(root / "demo_truth.csv")["ans"].to_numpy())
    assert (gender == 0).all() and (age == 2).all()
    assert (used.loc["eval", "age"] >= 60).all()


def test_deterministic_seeded_and_planted(faces, cache, tmp_path, real):
    kwargs = {"persons": 3, "eval_persons": 1, "landmark_cache": cache}
    generate_realfaces(tmp_path / "a", faces, seed=5, **kwargs)
    generate_realfaces(tmp_path / "b", faces, seed=5, **kwargs)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    generate_realfaces(tmp_path / "c", faces, seed=6, **kwargs)
    assert _files(tmp_path / "c" / "train") != _files(tmp_path / "a" / "train")
    assert generate_realfaces(tmp_path / "a", faces, seed=5, **kwargs)["skipped"] is True

    planted = tmp_path / "planted"
    assert generate_realfaces(planted, faces, seed=5, plant_errors=1.0, **kwargs)["planted"] == 3
    errors = pd.read_csv(planted / PLANTED_FILE, dtype={"id": str})
    assert sorted(errors["kind"]) == ["age", "gender", "swap_incorrect_normal"]
    clean = pd.read_csv(tmp_path / "a" / "train" / "train.csv", dtype={"id": str}).set_index("id")
    dirty = pd.read_csv(planted / "train" / "train.csv", dtype={"id": str}).set_index("id")
    def photos(root: Path, folder: str) -> dict[str, bytes]:
        return {f.name: f.read_bytes() for f in (root / "train" / "images" / folder).iterdir()}

    for row in errors.itertuples():
        before = photos(tmp_path / "a", clean.loc[row.id, "path"])
        after = photos(planted, dirty.loc[row.id, "path"])
        if row.kind == "swap_incorrect_normal":
            assert before != after and sorted(before.values()) == sorted(after.values())
        else:
            assert before == after and tuple(clean.loc[row.id]) != tuple(dirty.loc[row.id])
    assert _files(planted / "eval") == _files(tmp_path / "a" / "eval")


def test_copies_of_a_photo_are_dropped_before_persons_get_faces(faces, cache, tmp_path):
    """Every face listed twice more, under other names (same bytes, as UTKFace has some photos):
    the copies are left out, named in demo_duplicates.csv and counted in the summary; the
    smallest name of each group (the original here) is kept."""
    twins = tmp_path / "twins"
    (twins / "images").mkdir(parents=True)
    labels = pd.read_csv(faces / "labels.csv")
    copies = []
    for prefix in ("", "y_", "z_"):
        for name in labels["file"]:
            (twins / "images" / f"{prefix}{name}").symlink_to((faces / "images" / name).resolve())
        if prefix:
            copies.append(labels.assign(file=prefix + labels["file"]))
    pd.concat([labels, *copies]).to_csv(twins / "labels.csv", index=False)
    out = tmp_path / "out"
    summary = generate_realfaces(out, twins, persons=4, eval_persons=2, seed=0, landmark_cache=cache)
    assert summary["duplicate_faces"] == 2 * len(labels) and summary["faces"] <= len(labels)
    dropped = pd.read_csv(out / DUPLICATES_FILE)
    assert sorted(dropped["file"]) == sorted(pd.concat(copies)["file"])
    assert (dropped["kept"] == dropped["file"].str[2:]).all() and (dropped["kind"] == "same bytes").all()
    used = pd.read_csv(out / FACES_FILE)
    assert used["file"].isin(labels["file"]).all() and used["file"].is_unique


def test_unused_faces_go_to_external_with_labels(real, faces, cache, tmp_path):
    """OUT/external holds every usable face no person got (none of a train or eval person's),
    as the external config section reads it; a set made before OUT/external existed gets it on
    the next run, the set itself untouched."""
    external = real / EXTERNAL_DIR
    table = read_labels(external)  # the external step's own check passes
    used = set(pd.read_csv(real / FACES_FILE)["file"])
    names = [Path(f).name for f in table["file"]]
    labels = pd.read_csv(faces / "labels.csv").set_index("file")
    assert names and not set(names) & used and len(set(names)) == len(table)
    assert (table["age"].to_numpy() == labels.loc[names, "age"].to_numpy()).all()
    assert (table["gender"].map({0: "male", 1: "female"}).to_numpy() == labels.loc[names, "gender"].to_numpy()).all()
    assert all((external / "images" / n).read_bytes() == (faces / "images" / n).read_bytes() for n in names)
    # with the faces the set left out as copies: every listed face is either used, external,
    # a dropped copy or one without landmarks
    dropped = set(pd.read_csv(real / DUPLICATES_FILE)["file"])
    assert not set(names) & dropped and len(names) + len(used) + len(dropped) <= len(labels)
    # an older set without OUT/external: the next run adds it, changing nothing else
    old = tmp_path / "old"
    generate_realfaces(old, faces, persons=PERSONS, eval_persons=EVAL, seed=0, landmark_cache=cache)
    before = _files(old)
    shutil.rmtree(old / EXTERNAL_DIR)
    summary = generate_realfaces(old, faces, persons=PERSONS, eval_persons=EVAL, seed=0, landmark_cache=cache)
    assert summary["skipped"] is True and summary["external_faces"] == len(table)
    assert _files(old) == before


def test_too_many_persons_names_what_it_has_and_needs(faces, cache, tmp_path):
    has = sum(PICK.values())
    with pytest.raises(MaskpipeError, match=rf"labels\.csv: has {has} usable faces, needs 200 \(150 train"):
        generate_realfaces(tmp_path / "big", faces, persons=150, eval_persons=50, landmark_cache=cache)
    assert not (tmp_path / "big").exists()


def test_cli_demo_data_faces(faces, cache, tmp_path, capsys):
    out = tmp_path / "cli"
    cli_main(["demo-data", "--out", str(out), "--faces", str(faces), "--persons", "1", "--eval-persons", "1",
              "--landmark-cache", str(cache), "--female-share", "0", "--eval-male-share", "0",
              "--face-region", "square"])
    assert pd.read_csv(out / "train" / "train.csv")["gender"].tolist() == ["male"]
    assert json.loads((out / MARKER).read_text())["face_region"] == "square"
    assert cli_main(["demo-data", "--out", str(tmp_path / "y"), "--faces", str(faces), "--face-region", "hair"]) == 1
    assert "face region must be one of oval, square, got 'hair'" in capsys.readouterr().err
    assert set(decode(pd.read_csv(out / "demo_truth.csv")["ans"].to_numpy())[1]) == {1}
    assert cli_main(["demo-data", "--out", str(tmp_path / "x"), "--eval-persons", "3"]) == 1
    assert "--eval-persons needs --faces" in capsys.readouterr().err


def test_bad_labels_are_named(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "labels.csv").write_text("file,age,gender\na.jpg,30,male\nb.jpg,thirty,female\n")
    with pytest.raises(MaskpipeError, match=r"labels\.csv: row 3: age must be a whole number, got 'thirty'"):
        generate_realfaces(tmp_path / "out", bad, persons=1, eval_persons=0)
    (bad / "labels.csv").write_text("file,age,gender\na.jpg,30,M\n")
    with pytest.raises(MaskpipeError, match=r"labels\.csv: row 2: gender must be male or female, got 'M'"):
        generate_realfaces(tmp_path / "out", bad, persons=1, eval_persons=0)
    with pytest.raises(MaskpipeError, match="labels.csv: not found"):
        generate_realfaces(tmp_path / "out", tmp_path / "nowhere", persons=1, eval_persons=0)


# --- assign_faces on made-up faces: no photo needed -------------------------------------------------


def _made_up(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"file": [f"f{i}.jpg" for i in range(n)], "age": rng.integers(15, 86, n),
                         "gender": rng.integers(0, 2, n)})


def test_assign_faces_meets_the_priors_exactly():
    train, evals = assign_faces(_made_up(6000), 1000, 400, Priors(), seed=0)
    assert pd.concat([train["file"], evals["file"]]).is_unique
    assert train["gender"].sum() == 610 and (train["group"] == 2).sum() == round(1000 * 192 / 2700)
    assert (train.loc[train["group"] == 2, "label_age"] == 60).all()
    assert train.loc[train["group"] == 2, "age"].between(60, 65).all() and train["age"].min() >= 18
    assert (evals["gender"] == 0).sum() == 240 and (evals["group"] == 2).sum() == 100
    assert evals.loc[evals["group"] == 2, "age"].max() > 65 and (evals["label_age"] == evals["age"]).all()
    again, _ = assign_faces(_made_up(6000), 1000, 400, Priors(), seed=0)
    pd.testing.assert_frame_equal(train, again)
    other, _ = assign_faces(_made_up(6000), 1000, 400, Priors(), seed=1)
    assert list(other["file"]) != list(train["file"])


def test_assign_faces_old_ages_option_and_shortage():
    faces = _made_up(6000)
    train, _ = assign_faces(faces, 500, 0, Priors(old_ages=(60, 60), old_share=0.1), seed=0)
    assert (train.loc[train["group"] == 2, "age"] == 60).all() and (train["group"] == 2).sum() == 50
    with pytest.raises(MaskpipeError, match="has 6000 usable faces, needs 1500.*train needs"):
        assign_faces(faces, 1500, 0, Priors(old_ages=(60, 60), old_share=0.5), seed=0)
    young, _ = assign_faces(faces, 1000, 0, Priors(min_age=15), seed=0)
    assert young["age"].min() == 15 and train["age"].min() >= 18
    with pytest.raises(MaskpipeError, match="female_share"):
        Priors(female_share=1.5).check()
