import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import rgb_to_hsv
from PIL import Image

from maskpipe.classes import GENDER_BY_NAME, IMAGE_STEMS, age_bin, decode
from maskpipe.demo.synthetic import generate_demo
from maskpipe.io import MaskpipeError

PERSONS, EVAL = 6, 24


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo") / "data"
    summary = generate_demo(root, persons=PERSONS, eval_images=EVAL, seed=0)
    assert summary == {"persons": PERSONS, "train_images": PERSONS * 7, "eval_images": EVAL, "skipped": False}
    return root


@pytest.fixture(scope="module")
def train(demo) -> pd.DataFrame:
    return pd.read_csv(demo / "train" / "train.csv", dtype={"id": str})


def test_layout_and_csv_columns(demo, train):
    top = {p.name for p in demo.iterdir()}
    assert top == {"train", "eval", "demo_truth.csv", "demo.json"}
    assert {p.name for p in (demo / "train").iterdir()} == {"train.csv", "images"}
    assert {p.name for p in (demo / "eval").iterdir()} == {"info.csv", "images"}
    assert list(train.columns) == ["id", "gender", "race", "age", "path"]
    info = pd.read_csv(demo / "eval" / "info.csv")
    truth = pd.read_csv(demo / "demo_truth.csv")
    assert list(info.columns) == ["ImageID", "ans"] and list(truth.columns) == ["ImageID", "ans"]
    assert len(train) == PERSONS and len(info) == EVAL
    assert (info["ans"] == 0).all() and list(truth["ImageID"]) == list(info["ImageID"])
    assert all(re.fullmatch(r"[0-9a-f]{40}\.jpg", name) for name in info["ImageID"])
    assert sorted(p.name for p in (demo / "eval" / "images").iterdir()) == sorted(info["ImageID"])


def test_person_folders_match_train_csv(demo, train):
    assert train["id"].str.fullmatch(r"\d{6}").all() and train["id"].is_unique
    assert list(train["id"]) != [f"{i:06d}" for i in range(len(train))]  # drawn, not 0, 1, 2...
    assert set(train["gender"]) <= {"male", "female"} and (train["race"] == "Asian").all()
    expected = train["id"] + "_" + train["gender"] + "_Asian_" + train["age"].astype(str)
    assert list(train["path"]) == list(expected)
    folders = sorted(p.name for p in (demo / "train" / "images").iterdir())
    assert folders == sorted(train["path"])
    for folder in folders:
        files = list((demo / "train" / "images" / folder).iterdir())
        assert sorted(f.stem for f in files) == sorted(IMAGE_STEMS)
        assert len({f.suffix for f in files}) == 1, folder  # one extension per person


def test_ages_and_balance(train):
    groups = age_bin(train["age"].to_numpy())
    assert train["age"].between(18, 60).all()
    assert (train.loc[groups == 2, "age"] == 60).all()  # like the real data: every >=60 is 60
    combos = set(zip(train["gender"], groups, strict=True))
    assert len(combos) == 6  # each block of 6 persons holds every gender x age group once


def test_image_sizes_and_format_quirks(demo):
    modes, suffixes = set(), set()
    for path in (demo / "train" / "images").rglob("*.*"):
        with Image.open(path) as im:
            assert im.size == (384, 512), path
            modes.add((path.suffix, im.mode))
            suffixes.add(path.suffix)
    assert suffixes == {".jpg", ".jpeg", ".png"}
    assert (".png", "RGBA") in modes and (".png", "RGB") in modes
    for path in (demo / "eval" / "images").iterdir():
        with Image.open(path) as im:
            assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (384, 512))


def test_deterministic_and_prefix_stable(demo, tmp_path):
    again = tmp_path / "again"
    generate_demo(again, persons=PERSONS, eval_images=EVAL, seed=0)
    assert _files(again) == _files(demo)

    small = tmp_path / "small"
    generate_demo(small, persons=4, eval_images=5, seed=0)
    small_files, big_files = _files(small / "train" / "images"), _files(demo / "train" / "images")
    assert len(small_files) == 4 * 7 and all(big_files[k] == v for k, v in small_files.items())
    small_eval = pd.read_csv(small / "demo_truth.csv")
    big_eval = pd.read_csv(demo / "demo_truth.csv").head(5)
    pd.testing.assert_frame_equal(small_eval, big_eval)

    other_seed = tmp_path / "seed1"
    generate_demo(other_seed, persons=2, eval_images=0, seed=1)
    assert _files(other_seed / "train" / "images") != _files(small / "train" / "images")


def test_rerun_is_skipped_and_foreign_folders_are_refused(demo, tmp_path):
    before = {p: p.stat().st_mtime_ns for p in demo.rglob("*")}
    assert generate_demo(demo, persons=PERSONS, eval_images=EVAL, seed=0)["skipped"] is True
    assert {p: p.stat().st_mtime_ns for p in demo.rglob("*")} == before
    assert json.loads((demo / "demo.json").read_text())["persons"] == PERSONS

    with pytest.raises(MaskpipeError, match=re.escape(str(demo))):
        generate_demo(demo, persons=PERSONS + 1, eval_images=EVAL, seed=0)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(MaskpipeError, match="foreign"):
        generate_demo(foreign, persons=2, eval_images=0)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert generate_demo(empty, persons=1, eval_images=0)["skipped"] is False


# --- the cues, read back through an independent face detector -------------------------------------


@pytest.fixture(scope="module")
def read_cues():
    """(gender, age group) read off the forehead band of a photo, located by MTCNN's eye landmarks.

    Gender: the band is blue for male and magenta-pink for female. Age group: the number of dark
    stripes between band-coloured rows, going up through the forehead's middle (0, 1, 2). None
    where no face or no band is found.
    """
    facenet = pytest.importorskip("facenet_pytorch")
    detector = facenet.MTCNN(keep_all=False, min_face_size=40)

    def read(path: Path) -> tuple[int, int] | None:
        im = Image.open(path).convert("RGB")
        # Detecting at half size is 4x faster and the faces are 90+ px there.
        small = im.resize((192, 256), Image.Resampling.BILINEAR)
        boxes, _, landmarks = detector.detect(small, landmarks=True)
        if boxes is None:
            return None
        le, re_ = sorted((2 * landmarks[0][:2]).tolist())
        mid, d = (np.add(le, re_)) / 2, float(np.hypot(re_[0] - le[0], re_[1] - le[1]))
        ex = np.subtract(re_, le) / d
        ey = np.array([-ex[1], ex[0]])
        u, v = np.meshgrid(np.linspace(-0.3, 0.3, 13), np.linspace(-1.4, -0.3, 111))
        xy = (mid + d * (u[..., None] * ex + v[..., None] * ey)).round().astype(int)
        xy = np.clip(xy, 0, [im.width - 1, im.height - 1])
        hsv = rgb_to_hsv(np.asarray(im)[xy[..., 1], xy[..., 0]] / 255.0)  # rows run top to bottom
        blue = (abs(hsv[..., 0] - 0.60) < 0.08) & (hsv[..., 1] > 0.35) & (hsv[..., 2] > 0.35)
        pink = (abs(hsv[..., 0] - 0.93) < 0.08) & (hsv[..., 1] > 0.35) & (hsv[..., 2] > 0.35)
        band = np.flatnonzero(np.mean(blue | pink, axis=1) > 0.5)
        if len(band) == 0:
            return None
        dark = (np.median(hsv[..., 2], axis=1) < 0.25)[band[0] : band[-1] + 1]
        stripes = int(np.sum(dark[1:] & ~dark[:-1]))
        return int(pink.sum() > blue.sum()), stripes

    return read


def test_gender_and_age_cues_are_readable(demo, train, read_cues):
    read = 0
    for row in train.itertuples():
        normal = next((demo / "train" / "images" / row.path).glob("normal.*"))
        cue = read_cues(normal)
        if cue is not None:
            assert cue == (GENDER_BY_NAME[row.gender], int(age_bin(row.age))), row.path
            read += 1
    assert read >= PERSONS - 1


def test_eval_truth_matches_the_pictured_person(demo, read_cues):
    truth = pd.read_csv(demo / "demo_truth.csv")
    mask, gender, age = decode(truth["ans"].to_numpy())
    assert truth["ans"].between(0, 17).all() and set(mask) <= {0, 1, 2}
    assert len(set(zip(gender[:6], age[:6], strict=True))) == 6  # eval persons are balanced too
    read = 0
    for name, m, g, a in zip(truth["ImageID"], mask, gender, age, strict=True):
        # Masked faces give MTCNN landmarks too rough for the stripe count; the others are exact.
        cue = read_cues(demo / "eval" / "images" / name) if m > 0 else None
        if cue is not None:
            assert cue == (g, a), name
            read += 1
    assert read >= 4


def test_planted_errors_change_labels_not_photos(demo, tmp_path):
    from maskpipe.demo.synthetic import PLANTED_COLUMNS, PLANTED_FILE

    planted_root = tmp_path / "planted"
    summary = generate_demo(planted_root, persons=PERSONS, eval_images=EVAL, seed=0, plant_errors=0.5)
    assert summary["planted"] == 3
    truth = pd.read_csv(planted_root / PLANTED_FILE, dtype={"id": str, "given": str, "truth": str})
    assert list(truth.columns) == PLANTED_COLUMNS and len(truth) == 3
    assert set(truth["kind"]) == {"gender", "age", "swap_incorrect_normal"}  # one of each kind
    clean = pd.read_csv(demo / "train" / "train.csv", dtype={"id": str}).set_index("id")
    dirty = pd.read_csv(planted_root / "train" / "train.csv", dtype={"id": str}).set_index("id")
    changed = {i for i in clean.index if tuple(clean.loc[i]) != tuple(dirty.loc[i])}
    for row in truth.itertuples():
        assert dirty.loc[row.id, "path"] == row.person
        old, new = clean.loc[row.id], dirty.loc[row.id]
        folder = lambda root, r: root / "train" / "images" / r["path"]  # noqa: E731
        files = {f.name: f.read_bytes() for f in folder(demo, old).iterdir()}
        moved = {f.name: f.read_bytes() for f in folder(planted_root, new).iterdir()}
        if row.kind == "gender":
            assert (old["gender"], new["gender"]) == (row.truth, row.given) and old["gender"] != new["gender"]
            assert moved == files  # the photos still show the true gender
        elif row.kind == "age":
            assert age_bin(int(row.given)) != age_bin(int(row.truth)) == age_bin(old["age"])
            assert abs(int(age_bin(int(row.given))) - int(age_bin(int(row.truth)))) == 1  # adjacent
            assert moved == files
        else:
            assert tuple(old) == tuple(new)
            names = sorted(files)
            inc = next(n for n in names if n.startswith("incorrect_mask"))
            nor = next(n for n in names if n.startswith("normal"))
            assert moved[inc] == files[nor] and moved[nor] == files[inc]
            assert {n: b for n, b in moved.items() if n not in (inc, nor)} == \
                   {n: b for n, b in files.items() if n not in (inc, nor)}
    assert changed == set(truth.loc[truth["kind"] != "swap_incorrect_normal", "id"])
    # the eval images are untouched, and the clean demo has no planted-errors file
    assert _files(planted_root / "eval") == _files(demo / "eval")
    assert not (demo / PLANTED_FILE).exists()
    with pytest.raises(MaskpipeError, match="plant_errors"):
        generate_demo(tmp_path / "bad", persons=2, eval_images=0, plant_errors=1.5)
