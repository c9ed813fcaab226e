"""Competition-layout data made of real faces: each person is one labelled face photo.

``maskpipe demo-data --faces DIR`` writes what :mod:`maskpipe.demo.synthetic` writes (train persons in
the competition's layout and file-format quirks, an eval set, ``demo_truth.csv``, optional planted
errors), but each person is a real face from ``DIR/labels.csv`` (``file,age,gender``) placed in a
photo shoot of seven portraits with masks drawn from the face's own landmarks
(:mod:`maskpipe.demo.shoot`, :mod:`maskpipe.faces.masks`). A face is used for one person only, so
train and eval never share a face; copies of one photo under several names (UTKFace has them)
are dropped first, all but one (:mod:`maskpipe.demo.dedupe`).

The statistics follow the real competition data (``DESIGN.md``), as options:

* train is ~61% female (1,655 of 2,700 persons), and its age groups are those of the real train
  set (<30: 1,281, 30-59: 1,227, >=60: 192 persons);
* every train person of the >=60 group is a face aged 60-65 labelled 60: the real train set's
  >=60 class is all exactly 60, so a model trained on it never sees an older face;
* eval is made of persons too (7 photos each, shuffled, 40-hex names) with its own priors: the
  real eval set's predictions say ~60% male and many more over-60s (the winning team predicted
  >=60 for 31% of the photos), so by default 60% male and 25% of persons 60 or over, drawn from
  every face aged 60+. ``demo_truth.csv`` names the eval person of each photo.

The faces no person uses (of those left after dropping copies, with landmarks found) are
written to ``OUT/external/`` with their ``labels.csv``: a public face set for the ``external``
config section, disjoint from every train and eval person's face. It does not change the set
itself, so a folder made before it existed gets it on the next run.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from maskpipe.classes import GENDER_NAMES, IMAGE_STEMS, MASK_BY_STEM, age_bin, encode
from maskpipe.demo.competition import TrainWriter, check_out, finish, plant_plan, save_image, write_eval_tables
from maskpipe.demo.dedupe import HASH_SIZE, NEAR_BITS, find_duplicates
from maskpipe.data.external import face_path
from maskpipe.faces.landmarks import POINT_COLUMNS, face_paths, find_landmarks
from maskpipe.demo.shoot import plan_shoot, render
from maskpipe.io import MaskpipeError, read_csv, sha256_file, write_bytes_if_changed, write_csv

log = logging.getLogger(__name__)

_VERSION = 2  # bump when the images change (2: duplicate faces dropped)
#: Which face each person is (split, person: train folder or eval person, file, the face's age).
FACES_FILE = "demo_faces.csv"
#: The faces left out as copies of another (file, kept, kind, bits: see maskpipe.demo.dedupe).
DUPLICATES_FILE = "demo_duplicates.csv"
#: The faces no person uses, with ``labels.csv`` (file, age, gender): external training faces.
EXTERNAL_DIR = "external"
#: How much of a face photo a portrait keeps (maskpipe.demo.shoot): the first is the default.
FACE_REGIONS = ("oval", "square")
# Real train set: <30 1,281, 30-59 1,227 persons; the share of the young among the under-60s.
_YOUNG_SHARE = 1281 / (1281 + 1227)


@dataclass(frozen=True)
class Priors:
    """The statistics of the generated set (defaults: the real competition's, see the module)."""

    female_share: float = 0.61  # train: 1,655 of 2,700
    old_share: float = 192 / 2700  # train persons in the >=60 group
    old_ages: tuple[int, int] = (60, 65)  # ages of train's >=60 faces (inclusive), all labelled 60
    old_label: int = 60
    eval_male_share: float = 0.60
    eval_old_share: float = 0.25  # eval persons aged 60+, any age over 60
    min_age: int = 18  # the youngest face used: the real data's persons are adults

    def check(self) -> None:
        """Raises MaskpipeError naming a share outside 0..1 or an empty age range."""
        for name in ("female_share", "old_share", "eval_male_share", "eval_old_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise MaskpipeError(f"demo-data: {name} is a share, 0..1; got {getattr(self, name)}")
        lo, hi = self.old_ages
        if not 0 <= self.min_age < 30:
            raise MaskpipeError(f"demo-data: min_age must be 0..29 (the <30 group), got {self.min_age}")
        if not 60 <= lo <= hi:
            raise MaskpipeError(f"demo-data: old_ages must be a range of ages >= 60, got {self.old_ages}")


def _counts(total: int, shares: list[float]) -> list[int]:
    """``total`` split by ``shares`` with the largest remainders rounded up (sums to ``total``)."""
    raw = np.asarray(shares, np.float64) * total
    counts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - counts), kind="stable")[: total - counts.sum()]:
        counts[i] += 1
    return counts.tolist()


def _draws(total: int, female_share: float, old_share: float, rng: np.random.Generator) -> pd.DataFrame:
    """Gender (1 = female) and age group per person: exact shares, shuffled, drawn independently."""
    female = _counts(total, [1 - female_share, female_share])
    old = _counts(total, [1 - old_share, old_share])
    young = _counts(old[0], [_YOUNG_SHARE, 1 - _YOUNG_SHARE])
    genders = rng.permutation(np.repeat([0, 1], female))
    groups = rng.permutation(np.repeat([0, 1, 2], [*young, old[1]]))
    return pd.DataFrame({"gender": genders, "group": groups})


def assign_faces(faces: pd.DataFrame, persons: int, eval_persons: int, priors: Priors, seed: int,
                 where: str = "labels.csv") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Pick a distinct face for every train and eval person.

    Args:
        faces: Usable faces: ``file``, ``age``, ``gender`` (0 male, 1 female).
        persons, eval_persons: How many of each.
        priors: The shares to meet.
        seed: Seed of the draws.
        where: Named in the error.

    Returns:
        (train, eval): ``file``, ``gender``, ``age`` (the face's), ``label_age`` (what the set
        says) and ``group`` (0 <30, 1 30-59, 2 >=60) per person, in person order.

    Raises:
        MaskpipeError: the faces cannot give that many persons; says how many it has and needs.
    """
    rng = np.random.default_rng([seed, 10])
    pool = faces.iloc[rng.permutation(len(faces))].reset_index(drop=True)
    used = np.zeros(len(pool), bool)
    lo, hi = priors.old_ages
    age_ranges = {0: (priors.min_age, 29), 1: (30, 59)}
    plans = [("train", _draws(persons, priors.female_share, priors.old_share, rng), {**age_ranges, 2: (lo, hi)}),
             ("eval", _draws(eval_persons, 1 - priors.eval_male_share, priors.eval_old_share, rng),
              {**age_ranges, 2: (60, 200)})]
    out, short = [], []
    for split, draws, ranges in plans:
        table = _pick(pool, used, draws, ranges, lambda text, s=split: short.append(f"{s} needs {text}"))
        # Train's >=60 faces are 60-65 but say 60, as the real train set does.
        table["label_age"] = np.where(table["group"] == 2, priors.old_label, table["age"]) if split == "train" \
            else table["age"]
        out.append(table)
    if short:
        raise MaskpipeError(f"{where}: has {len(faces)} usable faces, needs {persons + eval_persons} "
                            f"({persons} train + {eval_persons} eval persons), short in: {'; '.join(short)}")
    return out[0], out[1]


def _pick(pool: pd.DataFrame, used: np.ndarray, draws: pd.DataFrame, ranges: dict[int, tuple[int, int]],
          shortage) -> pd.DataFrame:
    """The first unused faces of ``pool`` for each (gender, age group) cell of ``draws``; marks
    them ``used``; calls ``shortage(text)`` for a cell the pool cannot fill."""
    rows = []
    for (gender, group), idx in draws.groupby(["gender", "group"]).groups.items():
        a, b = ranges[group]
        ok = np.flatnonzero(~used & (pool["gender"] == gender).to_numpy() & pool["age"].between(a, b).to_numpy())
        if len(ok) < len(idx):
            shortage(f"{len(idx)} {GENDER_NAMES[gender]} faces aged {a}-{min(b, 120)}, has {len(ok)}")
            continue
        take = ok[: len(idx)]
        used[take] = True
        rows.append(pd.DataFrame({"person": idx, "file": pool["file"].to_numpy()[take], "gender": gender,
                                  "age": pool["age"].to_numpy()[take], "group": group}))
    if not rows:
        return pd.DataFrame(columns=["file", "gender", "age", "group"])
    return pd.concat(rows).sort_values("person").drop(columns="person").reset_index(drop=True)


def _read_faces(faces_dir: Path, cache: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, int]:
    """labels.csv with gender as 0/1, without duplicate photos, restricted to faces with
    landmarks; the landmarks; the duplicates left out (:func:`find_duplicates`); and how many
    faces had no landmarks (MTCNN found no face: they are left out)."""
    labels_path = faces_dir / "labels.csv"
    labels = read_csv(labels_path, required=["file", "age", "gender"])
    bad = labels[~labels["gender"].isin(GENDER_NAMES)]
    if len(bad):
        raise MaskpipeError(f"{labels_path}: row {bad.index[0] + 2}: gender must be male or female, "
                            f"got {bad['gender'].iloc[0]!r}")
    dup = labels["file"].duplicated()
    if dup.any():
        raise MaskpipeError(f"{labels_path}: row {int(np.flatnonzero(dup)[0]) + 2}: "
                            f"{labels['file'][dup].iloc[0]} is listed twice")
    ages = pd.to_numeric(labels["age"], errors="coerce")
    if ages.isna().any() or (ages % 1 != 0).any():
        row = int(np.flatnonzero(ages.isna() | (ages % 1 != 0))[0])
        raise MaskpipeError(f"{labels_path}: row {row + 2}: age must be a whole number, got {labels['age'][row]!r}")
    labels = labels.assign(gender=labels["gender"].map(GENDER_NAMES.index), age=ages.astype(int))
    paths = face_paths(faces_dir, labels["file"].tolist())
    # Before any face is given to a person: two persons made of one photo would be one face twice.
    duplicates = find_duplicates(paths, labels["file"].tolist())
    if len(duplicates):
        kinds = duplicates["kind"].value_counts()
        log.info("%s: %d of %d faces left out as copies of another (%d same bytes, %d near by pHash)",
                 labels_path, len(duplicates), len(labels), kinds.get("same bytes", 0), kinds.get("near", 0))
    labels = labels[~labels["file"].isin(duplicates["file"])].reset_index(drop=True)
    marks = find_landmarks(faces_dir, labels["file"].tolist(), cache)
    found = marks[POINT_COLUMNS].notna().all(axis=1).to_numpy()
    if not found.all():
        log.warning("%s: no landmarks found on %d of %d faces; they are not used",
                    labels_path, int((~found).sum()), len(found))
    return labels[found].reset_index(drop=True), marks[found], duplicates, int((~found).sum())


def _shoot(faces_dir: Path, file: str, age: int, marks: pd.DataFrame, rng: np.random.Generator, region: str):
    with Image.open(face_path(faces_dir, file)) as im:
        face = im.convert("RGB")
    return plan_shoot(face, marks.loc[file, POINT_COLUMNS].to_numpy(np.float64).reshape(5, 2), age, rng, region)


def generate_realfaces(out: Path, faces_dir: Path, persons: int = 150, eval_persons: int = 60, seed: int = 0,
                       plant_errors: float = 0.0, priors: Priors | None = None,
                       landmark_cache: Path | None = None, face_region: str = FACE_REGIONS[0]) -> dict:
    """Write a data set in the competition's layout under ``out``, one real face per person.

    Writes what :func:`maskpipe.demo.synthetic.generate_demo` writes (``demo_truth.csv`` with a
    ``person`` column: the eval person of each photo), ``demo_faces.csv``: the face of every
    person, so that a face is seen to be used once, and ``demo_duplicates.csv``: the faces left
    out as copies of another photo (:func:`maskpipe.demo.dedupe.find_duplicates`).

    Args:
        out: Folder to create; may exist if empty or if it holds a set made with these arguments.
        faces_dir: Folder of ``labels.csv`` (``file,age,gender``) and the face photos (beside it
            or in ``images/``).
        persons: Train persons (7 photos each).
        eval_persons: Eval persons (7 photos each, shuffled under 40-hex names).
        seed: Seed of every random choice.
        plant_errors: Share of the train persons (0..1) given a wrong label (see
            :mod:`maskpipe.demo.competition`).
        priors: Statistics of the set (default: the competition's, :class:`Priors`).
        landmark_cache: CSV of the faces' landmarks, kept between runs (default: beside ``out``,
            ``<out>.landmarks.csv``).
        face_region: How much of each face photo a portrait keeps: ``oval`` (the face on a
            drawn head of hair) or ``square`` (the photo's whole square, its own hair and all);
            see :mod:`maskpipe.demo.shoot`.

    Returns:
        Counts: ``persons``, ``eval_persons``, ``train_images``, ``eval_images``, ``faces`` (usable
        faces in the folder), ``duplicate_faces`` and ``faces_without_landmarks`` (left out; the
        three absent when skipped), ``external_faces`` (written to ``OUT/external``; absent when
        skipped and already there), ``planted`` (when planting) and ``skipped``.

    Raises:
        MaskpipeError: bad arguments, a bad labels.csv, too few faces, or ``out`` holding
            something else.
    """
    out, faces_dir = Path(out), Path(faces_dir)
    priors = priors or Priors()
    if persons < 0 or eval_persons < 0:
        raise MaskpipeError(f"demo-data: persons and eval persons must be >= 0, got {persons} and {eval_persons}")
    priors.check()
    if face_region not in FACE_REGIONS:
        raise MaskpipeError(f"demo-data: face region must be one of {', '.join(FACE_REGIONS)}, got {face_region!r}")
    plan = plant_plan(seed, persons, plant_errors)
    labels_path = faces_dir / "labels.csv"
    if not labels_path.is_file():
        raise MaskpipeError(f"{labels_path}: not found (--faces needs a folder with labels.csv: file,age,gender)")
    # The generator's name in the marker is the one sets were made under before the module
    # moved: a rename changes no photo, and a set made earlier must stay valid.
    params = {"generator": "maskpipe.data.realfaces", "version": _VERSION, "faces": str(faces_dir),
              "labels_sha256": sha256_file(labels_path), "persons": persons, "eval_persons": eval_persons,
              "seed": seed, "priors": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(priors).items()},
              "dedupe": {"hash_size": HASH_SIZE, "near_bits": NEAR_BITS}, "face_region": face_region}
    if plant_errors:
        params["plant_errors"] = plant_errors
    what = f"--faces {faces_dir}, persons={persons}, eval persons={eval_persons}, seed={seed}"
    summary = {"persons": persons, "eval_persons": eval_persons, "train_images": 7 * persons,
               "eval_images": 7 * eval_persons}
    if plant_errors:
        summary["planted"] = len(plan)
    cache = landmark_cache or out.with_name(out.name + ".landmarks.csv")
    if check_out(out, params, what):
        if not (out / EXTERNAL_DIR / "labels.csv").is_file():  # a set made before OUT/external
            faces = _read_faces(faces_dir, cache)[0]
            used = read_csv(out / FACES_FILE, required=["file"], dtype={"file": str})["file"]
            summary["external_faces"] = write_external(out / EXTERNAL_DIR, faces_dir, faces, used)
        return {**summary, "skipped": True}
    faces, marks, duplicates, missed = _read_faces(faces_dir, cache)
    summary.update(faces=len(faces), duplicate_faces=len(duplicates), faces_without_landmarks=missed)
    train, evals = assign_faces(faces, persons, eval_persons, priors, seed, where=str(labels_path))
    folders = _write_train(out, faces_dir, marks, train, seed, plan, bool(plant_errors), face_region)
    _write_eval(out, faces_dir, marks, evals, seed, face_region)
    used = [pd.DataFrame({"split": "train", "person": folders, "file": train["file"], "age": train["age"]}),
            pd.DataFrame({"split": "eval", "person": [str(j) for j in range(len(evals))], "file": evals["file"],
                          "age": evals["age"]})]
    used = pd.concat(used)
    write_csv(used, out / FACES_FILE)
    write_csv(duplicates, out / DUPLICATES_FILE)
    summary["external_faces"] = write_external(out / EXTERNAL_DIR, faces_dir, faces, used["file"])
    finish(out, params)
    log.info("wrote %d train and %d eval persons from %s to %s", persons, eval_persons, faces_dir, out)
    return {**summary, "skipped": False}


def write_external(folder: Path, faces_dir: Path, faces: pd.DataFrame, used: pd.Series) -> int:
    """Copy the ``faces`` not in ``used`` into ``folder`` with their ``labels.csv`` (file, age,
    gender; the file under ``images/``), in ``faces``' order; returns how many."""
    rest = faces[~faces["file"].isin(set(used))]
    for name, path in zip(rest["file"], face_paths(faces_dir, rest["file"].tolist()), strict=True):
        write_bytes_if_changed(folder / "images" / name, path.read_bytes())
    write_csv(pd.DataFrame({"file": [f"images/{f}" for f in rest["file"]], "age": rest["age"].to_numpy(),
                            "gender": [GENDER_NAMES[g] for g in rest["gender"]]}), folder / "labels.csv")
    log.info("wrote the %d faces no person uses to %s", len(rest), folder)
    return len(rest)


def _write_train(out: Path, faces_dir: Path, marks: pd.DataFrame, train: pd.DataFrame, seed: int,
                 plan: dict[int, str], planting: bool, region: str) -> list[str]:
    """Write the train persons; returns their folder names."""
    writer = TrainWriter(out, seed, plan)
    for i, row in enumerate(tqdm(train.itertuples(), total=len(train), desc="train persons", unit="person",
                                 disable=None)):
        rng = np.random.default_rng([seed, 11, i])
        pid = f"{1 + 2 * i + int(rng.integers(2)):06d}"  # unique, increasing, with gaps like the real ids
        shoot = _shoot(faces_dir, row.file, int(row.age), marks, rng, region)
        photos = {stem: render(shoot, stem, rng) for stem in IMAGE_STEMS}
        writer.person(i, pid, int(row.gender), int(row.label_age), int(row.group), photos, shoot.quality)
    writer.finish(planting)
    return [row["path"] for row in writer.rows]


def _write_eval(out: Path, faces_dir: Path, marks: pd.DataFrame, evals: pd.DataFrame, seed: int,
                region: str) -> None:
    truth = []
    for j, row in enumerate(tqdm(evals.itertuples(), total=len(evals), desc="eval persons", unit="person",
                                 disable=None)):
        rng = np.random.default_rng([seed, 12, j])
        shoot = _shoot(faces_dir, row.file, int(row.age), marks, rng, region)
        for stem in IMAGE_STEMS:
            image_id = rng.bytes(20).hex() + ".jpg"
            save_image(render(shoot, stem, rng), out / "eval" / "images" / image_id, "JPEG", "RGB", shoot.quality)
            truth.append({"ImageID": image_id, "person": j,
                          "ans": int(encode(MASK_BY_STEM[stem], int(row.gender), age_bin(int(row.age))))})
    table = pd.DataFrame(truth, columns=["ImageID", "ans", "person"])
    # Shuffled, as the real eval set lists its photos: no run of seven photos gives a person away.
    order = np.random.default_rng([seed, 13]).permutation(len(table))
    write_eval_tables(out, table.iloc[order].reset_index(drop=True))
