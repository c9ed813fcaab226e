"""External labelled faces: folders of face photos with ``labels.csv`` (``file, age, gender``).

Public face sets with ages (FairFace, UTKFace, ...) show ages the competition's train set never
does (its ">= 60" persons are all exactly 60). Each folder is checked as the competition data is
(:mod:`maskpipe.data.manifest`): one-line errors naming the file and row. An age is a whole
number or a range as FairFace writes it (``60-69``, ``more than 70``, ``70+``); a range counts as
its middle, rounded down, which puts each FairFace range in the age group it names under the
official bounds (``50-59`` -> 54, ``60-69`` -> 64).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from maskpipe import classes
from maskpipe.io import MaskpipeError, path_inside, read_csv

log = logging.getLogger(__name__)

INPUT_COLUMNS = ["file", "age", "gender"]  #: a folder's labels.csv
#: The external faces' table (:func:`read_folders`): one row per face, in folder then
#: labels.csv order.
FACE_COLUMNS = ["key", "folder", "file", "line", "path", "age", "gender"]
#: The external crops' labels: one row per crop (``row`` in the crops file).
LABEL_COLUMNS = ["key", "row", "folder", "file", "age", "gender", "mask", "label", "train_label"]
#: The mask state of an external face photo: the public face sets show faces without masks.
NOT_WEAR = classes.MASK_NAMES.index("not wear")
MAX_AGE = 120
_RANGE = re.compile(r"^(\d+)\s*-\s*(\d+)$")
_OPEN = re.compile(r"^(?:more than\s+(\d+)|(\d+)\s*\+)$", re.IGNORECASE)


def parse_age(text: str) -> int | None:
    """An age from ``text``: ``34``, a range ``60-69`` (its middle, rounded down), or an open
    range ``more than 70`` / ``70+`` (its bound); None when it is none of these or above 120."""
    text = str(text).strip()
    if text.isdigit():
        age = int(text)
    elif m := _RANGE.match(text):
        lo, hi = int(m[1]), int(m[2])
        if lo > hi:
            return None
        age = (lo + hi) // 2
    elif m := _OPEN.match(text):
        age = int(m[1] or m[2])
    else:
        return None
    return age if age <= MAX_AGE else None


def face_path(faces_dir: Path, name: str) -> Path:
    """Where ``labels.csv``'s ``file`` lives: beside it, or in its ``images/`` folder (UTKFace)."""
    direct = faces_dir / name
    return direct if direct.is_file() else faces_dir / "images" / name


def read_labels(folder: Path) -> pd.DataFrame:
    """``folder/labels.csv`` checked: ``file`` (a path inside ``folder``, or inside its ``images/``
    as UTKFace's folders hold them, listed once, present),
    ``age`` (:func:`parse_age`) and ``gender`` (``male``/``female``, any case).

    Returns:
        ``file``, ``line`` (its row in labels.csv), ``path`` (the photo), ``age`` (int) and
        ``gender`` (0 male, 1 female).

    Raises:
        MaskpipeError: one line naming ``labels.csv`` and the row at fault.
    """
    path = Path(folder) / "labels.csv"
    if not path.is_file():
        raise MaskpipeError(f"{path}: not found (an external folder holds labels.csv: file,age,gender)")
    df = read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in INPUT_COLUMNS if c not in df.columns]
    if missing:
        raise MaskpipeError(f"{path}: missing column(s) {', '.join(missing)} (expected {','.join(INPUT_COLUMNS)})")
    rows, seen = [], {}
    for i, (file, age_text, gender_text) in enumerate(df[INPUT_COLUMNS].itertuples(index=False), start=2):
        file, gender = file.strip(), gender_text.strip().lower()
        where = f"{path}: row {i}"
        if file in seen:
            raise MaskpipeError(f"{where}: file {file!r} is already listed in row {seen[file]}")
        seen[file] = i
        photo = face_path(Path(folder), file) if file and path_inside(folder, file, where) else None
        if photo is None or not photo.is_file():
            raise MaskpipeError(f"{where}: file {file!r} not found in {folder}")
        age = parse_age(age_text)
        if age is None:
            raise MaskpipeError(f"{where}: age {age_text!r} is not a whole number or a range such as 60-69 "
                                f"(0-{MAX_AGE})")
        if gender not in classes.GENDER_BY_NAME:
            raise MaskpipeError(f"{where}: gender {gender_text!r} is not male or female")
        rows.append({"file": file, "line": i, "path": str(photo), "age": age,
                     "gender": classes.GENDER_BY_NAME[gender]})
    if not rows:
        raise MaskpipeError(f"{path}: lists no faces")
    return pd.DataFrame(rows, columns=["file", "line", "path", "age", "gender"])


def read_folders(folders: list[str | Path]) -> pd.DataFrame:
    """Every face of ``folders``, checked (:func:`read_labels`).

    Returns:
        :data:`FACE_COLUMNS`: ``key`` is ``external/<folder number>/<file>`` (unique across
        folders, never a competition key), ``line`` its row in the folder's labels.csv,
        ``path`` the photo's path.

    Raises:
        MaskpipeError: a bad folder or ``labels.csv`` row, or no folder at all.
    """
    if not folders:
        raise MaskpipeError("external.folders: names no folder")
    parts = []
    for n, folder in enumerate(folders):
        table = read_labels(Path(folder))
        parts.append(table.assign(folder=str(folder), key=[f"external/{n}/{f}" for f in table["file"]]))
    faces = pd.concat(parts, ignore_index=True)
    log.info("external: %d faces in %d folder(s): %d male, %d female; ages %d-%d",
             len(faces), len(folders), int((faces["gender"] == 0).sum()), int((faces["gender"] == 1).sum()),
             faces["age"].min(), faces["age"].max())
    return faces[FACE_COLUMNS]


def external_labels(faces: pd.DataFrame, train_age_bounds: tuple[int, int]) -> pd.DataFrame:
    """The labels of ``faces`` (:data:`FACE_COLUMNS`, and ``mask`` where masks were drawn on
    them; else every face is "not wear") as training reads them, one row per crop: the
    official 18-class ``label`` and ``train_label`` (age groups by ``train_age_bounds``, as
    :func:`maskpipe.data.labels.add_training_targets` makes them)."""
    gender = faces["gender"].to_numpy()
    ages = faces["age"].to_numpy()
    mask = faces["mask"].to_numpy() if "mask" in faces else np.full(len(faces), NOT_WEAR)
    return pd.DataFrame({
        "key": faces["key"].to_numpy(), "row": np.arange(len(faces)), "folder": faces["folder"].to_numpy(),
        "file": faces["file"].to_numpy(), "age": ages, "gender": gender, "mask": mask,
        "label": classes.encode(mask, gender, classes.age_bin(ages)),
        "train_label": classes.encode(mask, gender, classes.age_bin(ages, train_age_bounds)),
    }, columns=LABEL_COLUMNS)
