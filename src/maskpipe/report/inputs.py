"""Reading a run's files for the report: one dataclass of paths, one loader that checks them.

Learning curves come from the TensorBoard logs the ``train`` step writes (every scalar it
logged), falling back to the ``history`` in its metrics.json when a log folder holds none.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from maskpipe import classes
from maskpipe.io import MaskpipeError, read_csv, read_json
from maskpipe.metrics import macro_f1
from maskpipe.mislabels import SUSPECT_COLUMNS
from maskpipe.report.rounds import Rounds
from maskpipe.report.rounds import read as read_rounds

log = logging.getLogger(__name__)

IMAGE_COLUMNS = ["key", "person", "id", "gender", "age", "stem", "path", "mask", "age_group", "label",
                 "sha256"]
CROP_COLUMNS = ["key", "row", "sha256", "source", "prob", "x1", "y1", "x2", "y2"]
SCORE_COLUMNS = ["model", "fold", "tta", "n", "macro_f1", "accuracy", "mask_f1", "gender_f1", "age_f1"]
PROB_COLUMNS = classes.PROB_COLUMNS
#: Scalars a learning curve needs; a log without them falls back to metrics.json.
CURVE_COLUMNS = ("train_loss", "val_loss", "val_f1")
#: The first columns of history.csv, in this order; any other scalar follows alphabetically.
HISTORY_ORDER = ("train_loss", "val_loss", "train_f1", "val_f1", "val_acc", "lr")
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
    crops_train: Path
    crop_index_eval: Path
    crop_sample: Path
    crop_fallbacks: Path
    folds: Path
    train_metrics: tuple[Path, ...]
    tensorboard: tuple[Path, ...]
    scores: Path
    ensemble_oof: Path
    metrics: Path
    submission: Path
    mislabels: Path
    mislabels_summary: Path
    persons: Path | None = None  #: the persons step's eval photo groups
    #: Pseudo-label rounds (none when off): every round's ensemble metrics and eval probabilities
    #: (round 1 first), and every later round's pseudo-label summary.
    round_metrics: tuple[Path, ...] = ()
    round_tests: tuple[Path, ...] = ()
    pseudo_summaries: tuple[Path, ...] = ()
    eval_truth: Path | None = None  #: the eval photos' true classes (``ImageID, ans``), when known

    def __post_init__(self) -> None:
        # Accept str and lists from a CLI; store Paths and a tuple so the object stays hashable.
        for name, value in list(vars(self).items()):
            if name in _MANY:
                paths = [value] if isinstance(value, str | Path) else value
                object.__setattr__(self, name, tuple(Path(p) for p in paths))
            elif value is not None:
                object.__setattr__(self, name, Path(value))


_MANY = ("train_metrics", "tensorboard", "round_metrics", "round_tests", "pseudo_summaries")


@dataclass
class Run:
    """Everything read from a run's files, plus consistency warnings shown in the summary."""

    manifest: pd.DataFrame
    labels: pd.DataFrame
    corrections: pd.DataFrame
    crops_train: pd.DataFrame
    crops_eval: pd.DataFrame
    crop_images: np.ndarray
    crop_sheets: dict[str, bytes]
    folds: pd.DataFrame
    #: One dict per model x fold (metrics.json); its ``history`` holds the TensorBoard scalars.
    train: list[dict]
    scores: pd.DataFrame
    oof: pd.DataFrame
    metrics: dict
    submission: pd.DataFrame
    #: The mislabels step's ranked suspects and its summary (OOF macro F1 when ranked).
    suspects: pd.DataFrame
    suspects_summary: dict
    #: The persons step's groups (``key, group, size, confidence``), when given.
    persons: pd.DataFrame | None = None
    #: The pseudo-label rounds compared (maskpipe.report.rounds), when there are any.
    rounds: Rounds | None = None
    #: Each eval photo's true class (``ans``, by ``ImageID``), when given.
    eval_truth: pd.Series | None = None
    warnings: list[str] = field(default_factory=list)


def _read_truth(path: Path) -> pd.Series:
    """``report.eval_truth``: each eval photo's true class by ImageID."""
    truth = read_csv(path, ["ImageID", "ans"], dtype={"ImageID": str})
    twice = truth["ImageID"].duplicated()
    if twice.any():
        raise MaskpipeError(f"{path}: line {int(np.flatnonzero(twice)[0]) + 2}: ImageID "
                            f"{truth['ImageID'][twice].iloc[0]!r} appears twice")
    return truth.set_index("ImageID")["ans"]


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
    obj = read_json(path, ["model", "fold", "best_epoch", "best_val_f1", "history"])
    obj["history"] = pd.DataFrame(obj["history"])
    missing = {"epoch", "train_loss", "val_loss", "val_f1"} - set(obj["history"].columns)
    if missing:
        raise MaskpipeError(f"{path}: history lacks {', '.join(sorted(missing))}")
    return obj


def _read_crops(path: Path) -> np.ndarray:
    """The crop step's N x H x W x 3 uint8 array, memory-mapped (the real one is gigabytes)."""
    try:
        crops = np.load(path, mmap_mode="r")
    except FileNotFoundError as e:
        raise MaskpipeError(f"{path}: file not found") from e
    except (ValueError, OSError) as e:
        raise MaskpipeError(f"{path}: not a .npy array ({e})") from e
    if crops.ndim != 4 or crops.shape[-1] != 3 or crops.dtype != np.uint8:
        raise MaskpipeError(f"{path}: expected uint8 crops of shape N x H x W x 3, "
                            f"found {crops.dtype} {crops.shape}")
    return crops


def read_scalars(folder: Path) -> pd.DataFrame:
    """Every scalar of a TensorBoard log folder: one row per step (``epoch``), one column per tag.

    Args:
        folder: a folder of ``events.out.tfevents.*`` files, as ``SummaryWriter`` writes them.

    Returns:
        The table sorted by epoch; empty (no columns) when the folder holds no scalars.

    Raises:
        MaskpipeError: the folder does not exist or its event files cannot be read.
    """
    from tensorboard.backend.event_processing import event_accumulator as ea
    from tensorboard.compat.tensorflow_stub.errors import OpError

    folder = Path(folder)
    if not folder.is_dir():
        raise MaskpipeError(f"{folder}: TensorBoard folder not found")
    acc = ea.EventAccumulator(str(folder), size_guidance={ea.SCALARS: 0})
    try:
        acc.Reload()
    except (OSError, OpError) as e:
        raise MaskpipeError(f"{folder}: cannot read the TensorBoard events ({e})") from e
    columns = {}
    for tag in sorted(acc.Tags()["scalars"]):
        # A resumed run logs its earlier epochs again into a new event file, read after the old
        # one: the last value of a step wins. Events hold float32; str() gives its shortest
        # decimal, so 0.1 reads back as 0.1, not 0.10000000149.
        columns[tag] = {int(e.step): float(str(np.float32(e.value))) for e in acc.Scalars(tag)}
    if not columns:
        return pd.DataFrame()
    return pd.DataFrame(columns).sort_index().rename_axis("epoch").reset_index()


def _scalar_history(history: pd.DataFrame) -> pd.DataFrame:
    """metrics.json's history cut to what TensorBoard gets: numbers, not flags."""
    keep = [c for c in history.columns if c == "epoch" or (
        pd.api.types.is_numeric_dtype(history[c]) and not pd.api.types.is_bool_dtype(history[c]))]
    return history[keep]


def _curves(t: dict, folder: Path, metrics_path: Path) -> tuple[pd.DataFrame, str | None]:
    """The per-epoch table of one model x fold and, when falling back, the reason why."""
    scalars = read_scalars(folder)
    missing = [c for c in CURVE_COLUMNS if c not in scalars.columns]
    if not missing:
        return scalars, None
    what = "no scalars" if scalars.empty else f"no {', '.join(missing)}"
    log.warning("report: %s in %s", what, folder)
    # The page names no paths, so it reads the same wherever the run lives.
    return (_scalar_history(t["history"]),
            f"{t['model']} fold {t['fold']}: {what} in its TensorBoard log; "
            f"learning curves from the history in {metrics_path.name}.")


def history_table(train: Sequence[dict]) -> pd.DataFrame:
    """One row per model x fold x epoch: ``model, fold, epoch`` and every scalar logged."""
    frames = [t["history"].assign(model=t["model"], fold=int(t["fold"])) for t in train]
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["model", "fold", "epoch"])
    scalars = sorted(set(df.columns) - {"model", "fold", "epoch"},
                     key=lambda c: (HISTORY_ORDER.index(c) if c in HISTORY_ORDER else len(HISTORY_ORDER), c))
    df = df[["model", "fold", "epoch", *scalars]].sort_values(["model", "fold", "epoch"])
    return df.reset_index(drop=True)


def load(inputs: ReportInputs) -> Run:
    """Read and cross-check every input; inconsistencies that do not block become warnings."""
    i = inputs
    if len(i.tensorboard) != len(i.train_metrics):
        raise MaskpipeError(f"report: {len(i.train_metrics)} training metrics file(s) but "
                            f"{len(i.tensorboard)} TensorBoard folder(s); give one of each per model x fold")
    run = Run(
        manifest=read_csv(i.train_manifest, IMAGE_COLUMNS, dtype=_STR),
        labels=read_csv(i.labels, IMAGE_COLUMNS + ["orig_label"], dtype=_STR),
        corrections=read_csv(i.corrections, ["line", "person", "fix", "old", "new", "reason"],
                             dtype={c: str for c in ("person", "fix", "old", "new", "reason")},
                             keep_default_na=False),
        crops_train=read_csv(i.crop_index_train, CROP_COLUMNS, dtype=_STR),
        crops_eval=read_csv(i.crop_index_eval, CROP_COLUMNS, dtype=_STR),
        crop_images=_read_crops(i.crops_train),
        crop_sheets={"sample": _read_png(i.crop_sample), "fallbacks": _read_png(i.crop_fallbacks)},
        folds=read_csv(i.folds, ["person", "fold", "stratum"], dtype=_STR),
        train=[_read_train_metrics(p) for p in i.train_metrics],
        scores=read_csv(i.scores, SCORE_COLUMNS, dtype={"model": str, "fold": str, "tta": str}),
        oof=read_csv(i.ensemble_oof, ["key", "person", "label", "pred", *PROB_COLUMNS], dtype=_STR),
        metrics=read_json(i.metrics, ["oof_macro_f1", "oof_accuracy", "f1_definition", "per_class_f1",
                                       "tasks"]),
        submission=read_csv(i.submission, ["ImageID", "ans"], dtype={"ImageID": str}),
        suspects=read_csv(i.mislabels, SUSPECT_COLUMNS, dtype={"person": str, "image": str, "given": str,
                                                              "suggested": str, "fix_value": str},
                          keep_default_na=False),
        suspects_summary=read_json(i.mislabels_summary, ["method", "oof_macro_f1", "suspects"]),
        persons=None if i.persons is None else read_csv(i.persons, ["key", "group", "size", "confidence"],
                                                        dtype={"key": str}),
        rounds=read_rounds(i.round_metrics, i.round_tests, i.pseudo_summaries),
        eval_truth=None if i.eval_truth is None else _read_truth(i.eval_truth),
    )
    unknown = ~run.crops_train["key"].isin(run.manifest["key"])
    if unknown.any():
        raise MaskpipeError(f"{i.crop_index_train}: key {run.crops_train['key'][unknown].iloc[0]!r} "
                            f"is not in {i.train_manifest}")
    uncropped = ~run.oof["key"].isin(run.crops_train["key"])
    if uncropped.any():
        raise MaskpipeError(f"{i.ensemble_oof}: key {run.oof['key'][uncropped].iloc[0]!r} is not in "
                            f"{i.crop_index_train}")
    rows = run.crops_train["row"].astype(int)
    if len(rows) and not rows.between(0, len(run.crop_images) - 1).all():
        bad = int(np.flatnonzero(~rows.between(0, len(run.crop_images) - 1))[0])
        raise MaskpipeError(f"{i.crop_index_train}: line {bad + 2}: row {rows.iloc[bad]} is outside "
                            f"{i.crops_train} ({len(run.crop_images)} crops)")
    for t, folder, path in zip(run.train, i.tensorboard, i.train_metrics, strict=True):
        t["history"], fallback = _curves(t, folder, path)
        if fallback:
            run.warnings.append(fallback)
    if len(run.metrics["per_class_f1"]) != classes.NUM_CLASSES:
        raise MaskpipeError(f"{i.metrics}: per_class_f1 has {len(run.metrics['per_class_f1'])} values, "
                            f"expected {classes.NUM_CLASSES}")
    truth = () if run.eval_truth is None else ((i.eval_truth, run.eval_truth.reset_index(), "ans"),)
    for path, df, col in ((i.labels, run.labels, "label"), (i.ensemble_oof, run.oof, "label"),
                          (i.ensemble_oof, run.oof, "pred"), (i.submission, run.submission, "ans"), *truth):
        bad = ~df[col].isin(range(classes.NUM_CLASSES))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise MaskpipeError(f"{path}: line {row + 2}: {col} {df[col].iloc[row]} is not a class 0..17")
    if run.eval_truth is not None:
        missing = ~run.submission["ImageID"].isin(run.eval_truth.index)
        if missing.any():
            raise MaskpipeError(f"{i.eval_truth}: no row for eval photo {run.submission['ImageID'][missing].iloc[0]!r} "
                                f"of {i.submission} ({int(missing.sum())} missing): report.eval_truth must "
                                "name the truth of this eval set")
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
