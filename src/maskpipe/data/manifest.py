"""The ``validate`` step: check the competition layout and write the image manifest.

One row per image with its person, labels, class and content hash. Class indices come from the
explicit tables in :mod:`maskpipe.classes`, never from the sort order of folder or file names.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
from PIL import Image
from tqdm import tqdm

from maskpipe import classes
from maskpipe.io import MaskpipeError, read_csv, sha256_file

log = logging.getLogger(__name__)

TRAIN_COLUMNS = ["id", "gender", "race", "age", "path"]
EVAL_COLUMNS = ["ImageID", "ans"]
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
#: Files that operating systems leave beside images; skipped silently.
JUNK_NAMES = {".DS_Store", "Thumbs.db", "desktop.ini"}


def _is_junk(name: str) -> bool:
    return name in JUNK_NAMES or name.startswith(".")  # hidden files, macOS "._x" included


def _check_columns(df: pd.DataFrame, expected: list[str], path: Path) -> None:
    # Spreadsheet exports leave spaces around names ("id, gender"): they are not the error.
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in expected if c not in df.columns]
    extra = [c for c in df.columns if c not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing column(s) {', '.join(missing)}")
        if extra:
            parts.append(f"unexpected column(s) {', '.join(map(str, extra))}")
        raise MaskpipeError(f"{path}: {'; '.join(parts)} (expected {','.join(expected)})")


def _person_images(folder: Path) -> dict[str, Path]:
    """The seven images of a person folder by stem; errors on missing, doubled or unknown."""
    found: dict[str, list[Path]] = {}
    for f in sorted(folder.iterdir()):
        if _is_junk(f.name):
            continue
        if f.suffix.lower() not in IMAGE_SUFFIXES or f.stem not in classes.MASK_BY_STEM:
            raise MaskpipeError(f"{f}: unexpected file in a person folder "
                                f"(expected {', '.join(classes.IMAGE_STEMS)} as .jpg/.jpeg/.png)")
        found.setdefault(f.stem, []).append(f)
    for stem in classes.IMAGE_STEMS:
        files = found.get(stem, [])
        if not files:
            raise MaskpipeError(f"{folder}: missing image {stem}")
        if len(files) > 1:
            names = ", ".join(f.name for f in files)
            raise MaskpipeError(f"{folder}: image {stem} appears {len(files)} times ({names})")
    return {stem: found[stem][0] for stem in classes.IMAGE_STEMS}


def check_image(path: Path) -> None:
    """Decode an image (JPEGs at 1/8 scale, which still reads every byte) or fail naming it."""
    if not path.is_file():
        raise MaskpipeError(f"{path}: image not found")
    try:
        with Image.open(path) as im:
            w, h = im.size
            im.draft("RGB", (max(1, w // 8), max(1, h // 8)))
            im.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise MaskpipeError(f"{path}: unreadable image ({e})") from e


def _check_and_hash(path: Path) -> str:
    check_image(path)
    return sha256_file(path)


def hash_images(paths: list[Path], workers: int, desc: str) -> list[str]:
    """Each image decoded (:func:`check_image`) and its SHA-256, in ``paths`` order."""
    # Hashing and decoding release the GIL, so threads overlap the I/O and both cores.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        it = pool.map(_check_and_hash, paths)
        return list(tqdm(it, total=len(paths), desc=desc, unit="img", disable=None))


def _read_train_csv(path: Path) -> pd.DataFrame:
    # ids stay strings: "000123" is not 123, and some real ids carry a suffix ("001498-1").
    df = read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    _check_columns(df, TRAIN_COLUMNS, path)
    for col in df.columns:
        df[col] = df[col].str.strip()
    for i, row in enumerate(df.itertuples(index=False), start=2):
        if row.gender not in classes.GENDER_BY_NAME:
            raise MaskpipeError(f"{path}: row {i}: gender {row.gender!r} is not male or female")
        if not row.age.isdigit() or not 0 <= int(row.age) <= 120:
            raise MaskpipeError(f"{path}: row {i}: age {row.age!r} is not a whole number 0-120")
        if not row.path or "/" in row.path or "\\" in row.path or row.path.startswith("."):
            # A bare name keeps every folder inside images/ ("../x" or "/x" would escape it).
            raise MaskpipeError(f"{path}: row {i}: path {row.path!r} is not a folder name "
                                "inside train/images")
    dup = df["path"][df["path"].duplicated()]
    if len(dup):
        raise MaskpipeError(f"{path}: folder {dup.iloc[0]!r} is listed more than once")
    return df


def build_train_manifest(root: Path, workers: int = 4) -> pd.DataFrame:
    """Check ``root/train`` and return one manifest row per training image.

    Raises:
        MaskpipeError: one line naming the file, row or folder at fault.
    """
    csv_path = root / "train" / "train.csv"
    images_dir = root / "train" / "images"
    people = _read_train_csv(csv_path)
    if not images_dir.is_dir():
        raise MaskpipeError(f"{images_dir}: folder not found")
    rows = []
    for i, p in enumerate(people.itertuples(index=False), start=2):
        folder = images_dir / p.path
        if not folder.is_dir():
            raise MaskpipeError(f"{csv_path}: row {i}: folder {folder} not found")
        for stem, file in _person_images(folder).items():
            mask = classes.MASK_BY_STEM[stem]
            gender = classes.GENDER_BY_NAME[p.gender]
            age_group = int(classes.age_bin(int(p.age)))
            rows.append({
                "key": f"{p.path}/{stem}",
                "person": p.path,
                "id": p.id,
                "gender": p.gender,
                "age": int(p.age),
                "stem": stem,
                "path": file.relative_to(root).as_posix(),
                "mask": mask,
                "age_group": age_group,
                "label": int(classes.encode(mask, gender, age_group)),
            })
    listed = set(people["path"])
    orphans = sorted(d.name for d in images_dir.iterdir() if d.is_dir() and d.name not in listed)
    if orphans:
        log.warning("%d folder(s) in %s are not in train.csv and are ignored (first: %s)",
                    len(orphans), images_dir, orphans[0])
    df = pd.DataFrame(rows)
    df["sha256"] = hash_images([root / p for p in df["path"]], workers, "validate train")
    return df


def build_eval_manifest(root: Path, workers: int = 4) -> pd.DataFrame:
    """Check ``root/eval`` and return one row per listed image, in ``info.csv`` order."""
    csv_path = root / "eval" / "info.csv"
    info = read_csv(csv_path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    _check_columns(info, EVAL_COLUMNS, csv_path)
    ids = info["ImageID"].str.strip()
    dup = ids[ids.duplicated()]
    if len(dup):
        raise MaskpipeError(f"{csv_path}: image {dup.iloc[0]!r} is listed more than once")
    for i, image_id in enumerate(ids, start=2):
        if not image_id or "/" in image_id or "\\" in image_id or image_id.startswith("."):
            raise MaskpipeError(f"{csv_path}: row {i}: ImageID {image_id!r} is not a file name")
        if not (root / "eval" / "images" / image_id).is_file():
            raise MaskpipeError(f"{csv_path}: row {i}: image eval/images/{image_id} not found")
    df = pd.DataFrame({"key": ids, "path": [f"eval/images/{i}" for i in ids]})
    df["sha256"] = hash_images([root / p for p in df["path"]], workers, "validate eval")
    return df
