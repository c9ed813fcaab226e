"""Writing generated data in the competition's exact layout: shared by every generator.

``train/train.csv`` + ``train/images/<id>_<gender>_Asian_<age>/<stem>.<ext>`` with the real
data's file-format quirks, ``eval/info.csv`` + ``eval/images/<40 hex>.jpg``, ``demo_truth.csv``
(the true class of every eval photo), an optional ``planted_errors.csv`` and a marker JSON written
last. Planted errors give a person a wrong label while the photos keep showing the truth, the way
the real data's mistakes look: a flipped gender or a shifted age in the folder name and
train.csv, or incorrect_mask and normal files exchanged.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from maskpipe.classes import GENDER_NAMES, MASK_BY_STEM, OFFICIAL_AGE_BOUNDS
from maskpipe.io import MaskpipeError, atomic_path, write_csv, write_json

log = logging.getLogger(__name__)

WIDTH, HEIGHT = 384, 512
# File-format quirks of the real data, one extension per person, placed by index so that any
# set of >= 6 persons has each of them: (suffix, PIL format, image mode).
_QUIRKS = {1: (".png", "PNG", "RGBA"), 3: (".jpeg", "JPEG", "RGB"), 5: (".png", "PNG", "RGB")}
_QUIRK_PERIOD = 23
#: Kinds of planted label errors, named like the corrections that undo them (maskpipe.data.labels).
PLANT_KINDS = ("gender", "age", "swap_incorrect_normal")
PLANTED_FILE = "planted_errors.csv"
PLANTED_COLUMNS = ["person", "id", "kind", "given", "truth"]
TRAIN_COLUMNS = ["id", "gender", "race", "age", "path"]
MARKER = "demo.json"


def quirk(index: int) -> tuple[str, str, str]:
    """(suffix, PIL format, mode) of train person ``index``'s photos."""
    return _QUIRKS.get(index % _QUIRK_PERIOD, (".jpg", "JPEG", "RGB"))


def save_image(img: Image.Image, path: Path, fmt: str, mode: str, quality: int) -> None:
    """Write one photo atomically in the given format and mode."""
    with atomic_path(path) as tmp:
        if fmt == "JPEG":
            img.convert(mode).save(tmp, format=fmt, quality=quality, subsampling=2)
        else:
            img.convert(mode).save(tmp, format=fmt, compress_level=1)  # level 6 is 10x slower


def plant_plan(seed: int, persons: int, rate: float) -> dict[int, str]:
    """Which persons get a planted error, and its kind: ``round(rate * persons)`` of them.

    Drawn from their own seed stream, so the photos and true labels stay those of the clean set;
    the kinds take turns in a shuffled order, so every kind is planted about equally often.
    """
    if not 0 <= rate <= 1:
        raise MaskpipeError(f"demo: plant_errors is a share of the persons, 0..1; got {rate}")
    count = int(round(rate * persons))
    rng = np.random.default_rng([seed, 3])
    chosen = sorted(rng.choice(persons, size=count, replace=False).tolist()) if count else []
    kinds = [PLANT_KINDS[k % len(PLANT_KINDS)] for k in rng.permutation(count)]
    return dict(zip(chosen, kinds, strict=True))


def _shifted_age(age_group: int, rng: np.random.Generator) -> int:
    """An age in an adjacent age group: the likeliest real mistake (a neighbouring decade)."""
    young, old = OFFICIAL_AGE_BOUNDS
    group = 1 if age_group != 1 else int(rng.choice([0, 2]))
    return int(rng.integers(*[(18, young), (young, old), (old, old + 1)][group]))


def check_out(out: Path, params: dict, what: str) -> bool:
    """True when ``out`` already holds the set ``params`` describe (nothing to do).

    Raises:
        MaskpipeError: ``out`` exists and holds something else (``what`` names the arguments).
    """
    marker = out / MARKER
    if marker.is_file():
        try:
            same = json.loads(marker.read_text()) == params
        except json.JSONDecodeError:
            same = False
        if same:
            log.info("%s already holds this demo (%s); skipping", out, marker.name)
            return True
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise MaskpipeError(f"{out}: exists and does not hold a demo made with {what}; "
                            "remove it or choose another folder")
    return False


class TrainWriter:
    """Writes train persons (with any planted error) and then the train tables."""

    def __init__(self, out: Path, seed: int, plan: dict[int, str]):
        self.out, self.seed, self.plan = Path(out), seed, plan
        self.rows: list[dict] = []
        self.planted: list[dict] = []

    def person(self, i: int, pid: str, gender: int, age: int, age_group: int,
               photos: dict[str, Image.Image], quality: int) -> None:
        """Write person ``i``'s photos (stem -> image, showing the truth) and record its row."""
        kind = self.plan.get(i)
        given_gender = 1 - gender if kind == "gender" else gender
        given_age = _shifted_age(age_group, np.random.default_rng([self.seed, 4, i])) if kind == "age" else age
        name = f"{pid}_{GENDER_NAMES[given_gender]}_Asian_{given_age}"
        suffix, fmt, mode = quirk(i)
        for stem, img in photos.items():
            if kind == "swap_incorrect_normal" and MASK_BY_STEM[stem] > 0:
                stem = "normal" if stem == "incorrect_mask" else "incorrect_mask"  # file names exchanged
            save_image(img, self.out / "train" / "images" / name / f"{stem}{suffix}", fmt, mode, quality)
        self.rows.append({"id": pid, "gender": GENDER_NAMES[given_gender], "race": "Asian", "age": given_age,
                          "path": name})
        if kind:
            given, truth = {"gender": (GENDER_NAMES[given_gender], GENDER_NAMES[gender]),
                            "age": (given_age, age),
                            "swap_incorrect_normal": ("incorrect_mask<->normal", "swapped")}[kind]
            self.planted.append({"person": name, "id": pid, "kind": kind, "given": given, "truth": truth})

    def finish(self, planting: bool) -> None:
        """Write train.csv, and planted_errors.csv when planting."""
        write_csv(pd.DataFrame(self.rows, columns=TRAIN_COLUMNS), self.out / "train" / "train.csv")
        if planting:
            write_csv(pd.DataFrame(self.planted, columns=PLANTED_COLUMNS), self.out / PLANTED_FILE)


def write_eval_tables(out: Path, truth: pd.DataFrame) -> None:
    """``eval/info.csv`` (every answer 0, as the competition ships it) and ``demo_truth.csv``.

    ``truth`` holds ``ImageID``, ``ans`` and any further columns (e.g. the eval person).
    """
    info = pd.DataFrame({"ImageID": truth["ImageID"], "ans": 0})
    write_csv(info, out / "eval" / "info.csv")
    write_csv(truth, out / "demo_truth.csv")


def finish(out: Path, params: dict) -> None:
    """Write the marker last: its presence means the whole set was written."""
    write_json(params, out / MARKER)
