"""The ``teacher`` step: a pretrained age and gender estimate for every photo whose face dlib can
align, cached per photo, shared within each person.

Faces are found by dlib's own HOG frontal face detector on the original photo, not taken from
the crop step's MTCNN boxes: the 5-point landmark model was trained on that detector's boxes,
and its misses are the signal wanted here. It finds few masked faces (none of the demo's), so a
photo it cannot align is mostly one whose mask hides what the networks read; such a photo gets
the estimate of its person's best-detected face (train: the person folder; eval: the persons
step's group), and one whose person has no aligned face gets none (the ensemble then keeps the
models' prediction). "Best" is dlib's detection score, the same rule on train and eval: eval has
no mask labels, and the ensemble's teacher weight is fitted on train photos for use on eval.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from maskpipe.classes import TASK_COLUMNS
from maskpipe.images import read_rgb
from maskpipe.io import HashCache, MaskpipeError, read_csv, write_csv
from maskpipe.teacher.estimator import Estimate, Estimator, model_version

log = logging.getLogger(__name__)

#: The estimate's columns: P(gender) (male, female) and P(age group) as prediction tables name
#: them, and the expected age.
VALUE_COLUMNS = [*TASK_COLUMNS["gender"], *TASK_COLUMNS["age"], "mean_age"]
#: The step's output, one row per photo in manifest order. ``aligned``: the photo's own face was
#: aligned; ``source``: whose estimate the row holds (own, person, none: NaN values).
COLUMNS = ["key", "aligned", "score", "source", *VALUE_COLUMNS]
_CACHE_COLUMNS = ["sha256", "aligned", "score", *VALUE_COLUMNS]


@dataclass(frozen=True)
class TeacherSettings:
    """The ``teacher`` config section's keys (their defaults and meaning: the schema's)."""

    enabled: bool
    upsample: int
    max_side: int
    min_score: float
    pool: bool

    def cache_key(self) -> str:
        """What decides a photo's estimate: the detector settings, this package's estimator
        code and the versions of the models and libraries (an edit there estimates again)."""
        text = json.dumps({"upsample": self.upsample, "max_side": self.max_side,
                           "code": _fingerprint()}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@functools.cache
def _fingerprint() -> str:
    code = "".join(Path(inspect.getsourcefile(f)).read_text() for f in (Estimator, read_rgb))  # their modules
    libs = [model_version(), f"dlib-bin=={version('dlib-bin')}", f"Pillow=={version('Pillow')}"]
    import cv2

    return hashlib.sha256((code + " ".join(libs) + cv2.__version__).encode()).hexdigest()


def estimate_cache(folder: Path, settings: TeacherSettings) -> HashCache:
    """Estimates per photo content hash, one CSV per :meth:`TeacherSettings.cache_key`."""
    return HashCache(Path(folder) / f"{settings.cache_key()}.csv", _CACHE_COLUMNS)


def _row(sha: str, found: Estimate | None) -> dict:
    if found is None:
        return {"sha256": sha, "aligned": False, "score": np.nan, **dict.fromkeys(VALUE_COLUMNS, np.nan)}
    values = [*found.gender, *found.age, found.mean_age]
    return {"sha256": sha, "aligned": True, "score": round(found.score, 6),
            **{c: round(float(v), 6) for c, v in zip(VALUE_COLUMNS, values, strict=True)}}


def estimate_photos(manifest: pd.DataFrame, root: Path, cache: HashCache,
                    estimator: Callable[[], Estimator], desc: str) -> pd.DataFrame:
    """Each manifest photo's own estimate (``sha256, aligned, score`` and the values), in manifest
    order; photos already in ``cache`` are not read again and ``estimator`` (a factory: loading
    the networks costs about half a second) is only called when one is not."""
    todo = [h for h in dict.fromkeys(manifest["sha256"]) if h not in cache.rows]
    if todo:
        model = estimator()
        paths = dict(zip(manifest["sha256"], manifest["path"], strict=True))
        for sha in tqdm(todo, desc=desc, unit="img", disable=None):
            image = np.asarray(read_rgb(root / paths[sha]))
            cache.rows[sha] = _row(sha, model.estimate(image))
    rows = [cache.rows[h] for h in manifest["sha256"]]
    out = pd.DataFrame(rows, columns=_CACHE_COLUMNS)
    out["aligned"] = out["aligned"].astype(bool)
    out.insert(0, "key", manifest["key"].to_numpy())
    return out


def share_within_persons(own: pd.DataFrame, persons: np.ndarray | None, min_score: float) -> pd.DataFrame:
    """Every photo's estimate: its person's best-scored aligned face's (``persons``: a person or
    group per row; None: each photo keeps its own). Faces scored below ``min_score`` count as
    not aligned."""
    out = own.reset_index(drop=True)  # row labels are positions below
    usable = out["aligned"].to_numpy() & (out["score"].fillna(-np.inf).to_numpy() >= min_score)
    out["aligned"] = usable
    out["source"] = np.where(usable, "own", "none")
    out.loc[~usable, VALUE_COLUMNS + ["score"]] = np.nan
    if persons is None:
        return out[COLUMNS]
    score = out["score"].fillna(-np.inf).to_numpy()
    for rows in pd.Series(np.arange(len(out))).groupby(persons, sort=False).indices.values():
        rows = np.asarray(rows)
        if not usable[rows].any():
            continue
        best = rows[np.argmax(score[rows])]  # the first of equal scores
        others = rows[rows != best]
        out.loc[others, VALUE_COLUMNS] = out.loc[best, VALUE_COLUMNS].to_numpy()
        out.loc[others, "source"] = "person"
    return out[COLUMNS]


def teach_splits(train_manifest: Path, eval_manifest: Path, groups: Path | None, root: Path, cache_dir: Path,
                 settings: TeacherSettings, out_train: Path, out_eval: Path) -> dict[str, dict[str, int]]:
    """Estimate every train and eval photo; write each split's table (:data:`COLUMNS`); return
    and log how many photos were aligned, got their person's estimate, or got none. ``groups``:
    the persons step's eval photo groups, needed with ``settings.pool`` only.

    Raises:
        MaskpipeError: a manifest or the groups lack a column, an eval photo has no group, or
            ``settings.pool`` is on without ``groups``.
    """
    if settings.pool and groups is None:
        raise MaskpipeError("teacher.pool: sharing estimates within persons needs the persons step's "
                            "groups (--persons)")
    cache = estimate_cache(cache_dir, settings)
    model = functools.cache(lambda: Estimator(settings.upsample, settings.max_side))
    train = read_csv(train_manifest, required=["key", "person", "path", "sha256"], dtype={"key": str})
    evals = read_csv(eval_manifest, required=["key", "path", "sha256"], dtype={"key": str})
    counts = {}
    try:
        own = {"train": estimate_photos(train, root, cache, model, "teacher train"),
               "eval": estimate_photos(evals, root, cache, model, "teacher eval")}
    finally:
        cache.save()  # what was estimated before a failure is kept
    persons = {"train": train["person"].to_numpy(), "eval": None}
    if settings.pool:
        table = read_csv(groups, required=["key", "group"], dtype={"key": str}).set_index("key")["group"]
        missing = evals.loc[~evals["key"].isin(table.index), "key"]
        if len(missing):
            raise MaskpipeError(f"{groups}: eval photo {missing.iloc[0]!r} has no group; rerun the persons step")
        persons["eval"] = table.loc[evals["key"]].to_numpy()
    else:
        persons["train"] = None
    for split, out in (("train", out_train), ("eval", out_eval)):
        shared = share_within_persons(own[split], persons[split], settings.min_score)
        write_csv(shared, out)
        counts[split] = {"photos": len(shared), "aligned": int(shared["aligned"].sum()),
                         "from_person": int((shared["source"] == "person").sum()),
                         "without_estimate": int((shared["source"] == "none").sum())}
        log.info("teacher %s: %d photos, %d aligned, %d given their person's estimate, %d without "
                 "an estimate (they keep the models' prediction)", split, *counts[split].values())
    if "mask" in train:
        rate = own["train"].groupby(train["mask"].to_numpy())["aligned"].mean()
        log.info("teacher train: aligned by mask state (0 wear, 1 incorrect, 2 not wear): %s",
                 ", ".join(f"{m}: {r:.0%}" for m, r in rate.items()))
    return counts

