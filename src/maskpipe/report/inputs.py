"""Reading a run's files for the report: one dataclass of paths, one loader that checks them."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from maskpipe import classes
from maskpipe.io import MaskpipeError, read_csv
from maskpipe.metrics import macro_f1

log = logging.getLogger(__name__)

IMAGE_COLUMNS = ["key", "person", "id", "gender", "age", "stem", "path", "mask", "age_group", "label",
                 "sha256"]
CROP_COLUMNS = ["key", "row", "sha256", "source", "prob", "x1", "y1", "x2", "y2"]
SCORE_COLUMNS = ["model", "fold", "tta", "n", "macro_f1", "accuracy", "mask_f1", "gender_f1", "age_f1"]
#: Stratum s = gender * 3 + age group, as written by the folds step.
STRATUM_NAMES = [f"{g}/{a}" for g in classes.GENDER_NAMES for a in classes.AGE_NAMES]
_STR = {"key": str, "person": str, "id": str}


@dataclass(frozen=True)
class ReportInputs:
    """The files a report is built from; see the module of the step that writes each one."""

    train_manifest: Path
    labels: Path
    corrections: Path
    crop_index_train: Path
    crop_index_eval: Path
    crop_sample: Path
    crop_fallbacks: Path
    folds: Path
    train_metrics: tuple[Path, ...]
    scores: Path
    ensemble_oof: Path
    metrics: Path
    submission: Path

    def __post_init__(self) -> None:
        # Accept str and lists from a CLI; store Paths and a tuple so the object stays hashable.
        for name, value in list(vars(self).items()):
            if name == "train_metrics":
                paths = [value] if isinstance(value, str | Path) else value
                object.__setattr__(self, name, tuple(Path(p) for p in paths))
            else:
                object.__setattr__(self, name, Path(value))


@dataclass
class Run:
    """Everything read from a run's files, plus consistency warnings shown in the summary."""

    manifest: pd.DataFrame
    labels: pd.DataFrame
    corrections: pd.DataFrame
    crops_train: pd.DataFrame
    crops_eval: pd.DataFrame
    crop_sheets: dict[str, bytes]
    folds: pd.DataFrame
    train: list[dict]
    scores: pd.DataFrame
    oof: pd.DataFrame
    metrics: dict
    submission: pd.DataFrame
    warnings: list[str] = field(default_factory=list)


def _read_json(path: Path, required: Sequence[str]) -> dict:
    try:
        obj = json.loads(Path(path).read_text())
    except FileNotFoundError as e:
        raise MaskpipeError(f"{path}: file not found") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MaskpipeError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(obj, dict):
        raise MaskpipeError(f"{path}: expected a JSON object, found {type(obj).__name__}")
    missing = [k for k in required if k not in obj]
    if missing:
        raise MaskpipeError(f"{path}: missing key(s) {', '.join(missing)}")
    return obj


def _read_png(path: Path) -> bytes:
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError as e:
        raise MaskpipeError(f"{path}: file not found") from e
    if not data.startswith(b"\x89PNG"):
        raise MaskpipeError(f"{path}: not a PNG image")
    return data


def _read_train_metrics(path: Path) -> dict:
    """One model x fold's training metrics, its history as a table."""
    obj = _read_json(path, ["model", "fold", "best_epoch", "best_val_f1", "history"])
    obj["history"] = pd.DataFrame(obj["history"])
    missing = {"epoch", "train_loss", "val_loss", "val_f1"} - set(obj["history"].columns)
    if missing:
        raise MaskpipeError(f"{path}: history lacks {', '.join(sorted(missing))}")
    return obj


def load(inputs: ReportInputs) -> Run:
    """Read and cross-check every input; inconsistencies that do not block become warnings."""
    i = inputs
    run = Run(
        manifest=read_csv(i.train_manifest, IMAGE_COLUMNS, dtype=_STR),
        labels=read_csv(i.labels, IMAGE_COLUMNS + ["orig_label"], dtype=_STR),
        corrections=read_csv(i.corrections, ["line", "person", "fix", "old", "new", "reason"],
                             dtype={c: str for c in ("person", "fix", "old", "new", "reason")},
                             keep_default_na=False),
        crops_train=read_csv(i.crop_index_train, CROP_COLUMNS, dtype=_STR),
        crops_eval=read_csv(i.crop_index_eval, CROP_COLUMNS, dtype=_STR),
        crop_sheets={"sample": _read_png(i.crop_sample), "fallbacks": _read_png(i.crop_fallbacks)},
        folds=read_csv(i.folds, ["person", "fold", "stratum"], dtype=_STR),
        train=[_read_train_metrics(p) for p in i.train_metrics],
        scores=read_csv(i.scores, SCORE_COLUMNS, dtype={"model": str, "fold": str, "tta": str}),
        oof=read_csv(i.ensemble_oof, ["key", "person", "label", "pred"], dtype=_STR),
        metrics=_read_json(i.metrics, ["oof_macro_f1", "oof_accuracy", "f1_definition", "per_class_f1",
                                       "tasks"]),
        submission=read_csv(i.submission, ["ImageID", "ans"], dtype={"ImageID": str}),
    )
    unknown = ~run.crops_train["key"].isin(run.manifest["key"])
    if unknown.any():
        raise MaskpipeError(f"{i.crop_index_train}: key {run.crops_train['key'][unknown].iloc[0]!r} "
                            f"is not in {i.train_manifest}")
    if len(run.metrics["per_class_f1"]) != classes.NUM_CLASSES:
        raise MaskpipeError(f"{i.metrics}: per_class_f1 has {len(run.metrics['per_class_f1'])} values, "
                            f"expected {classes.NUM_CLASSES}")
    for path, df, col in ((i.labels, run.labels, "label"), (i.ensemble_oof, run.oof, "label"),
                          (i.ensemble_oof, run.oof, "pred"), (i.submission, run.submission, "ans")):
        bad = ~df[col].isin(range(classes.NUM_CLASSES))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise MaskpipeError(f"{path}: line {row + 2}: {col} {df[col].iloc[row]} is not a class 0..17")
    recomputed = macro_f1(run.oof["label"].to_numpy(), run.oof["pred"].to_numpy())
    if abs(recomputed - run.metrics["oof_macro_f1"]) > 5e-4:
        run.warnings.append(f"{i.metrics.name} says OOF macro F1 {run.metrics['oof_macro_f1']:.4f}, "
                            f"but {i.ensemble_oof.name} gives {recomputed:.4f}.")
    if len(run.crops_eval) != len(run.submission):
        run.warnings.append(f"{len(run.submission)} submission rows but {len(run.crops_eval)} eval crops.")
    unfolded = set(run.labels["person"]) - set(run.folds["person"])
    if unfolded:
        run.warnings.append(f"{len(unfolded)} labelled person(s) have no fold, e.g. {min(unfolded)!r}.")
    for w in run.warnings:
        log.warning("report: %s", w)
    return run
