"""The ``submit`` step's core: ``ImageID,ans`` in ``eval/info.csv`` order, checked before writing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from maskpipe.classes import NUM_CLASSES, PROB_COLUMNS
from maskpipe.io import MaskpipeError, read_csv, write_csv


def make_submission(probs: pd.DataFrame, eval_manifest: pd.DataFrame) -> pd.DataFrame:
    """Argmax class per eval image, in the manifest's (``info.csv``'s) order.

    Raises:
        MaskpipeError: an image without a prediction, a duplicate, or a class outside 0..17.
    """
    dup = probs["key"][probs["key"].duplicated()]
    if len(dup):
        raise MaskpipeError(f"submission: image {dup.iloc[0]!r} is predicted more than once")
    by_key = probs.set_index("key")
    missing = [k for k in eval_manifest["key"] if k not in by_key.index]
    if missing:
        raise MaskpipeError(f"submission: no prediction for eval image {missing[0]!r} "
                            f"({len(missing)} missing)")
    p = by_key.loc[eval_manifest["key"], PROB_COLUMNS].to_numpy()
    if not np.isfinite(p).all():
        raise MaskpipeError("submission: the ensemble's test probabilities contain NaN or inf")
    sub = pd.DataFrame({"ImageID": eval_manifest["key"].to_numpy(), "ans": p.argmax(1).astype(int)})
    check_submission(sub, eval_manifest)
    return sub


def check_submission(sub: pd.DataFrame, eval_manifest: pd.DataFrame) -> None:
    """Row count, every id once and in order, ``ans`` integers 0..17."""
    if list(sub.columns) != ["ImageID", "ans"]:
        raise MaskpipeError(f"submission: columns are {list(sub.columns)}, not ['ImageID', 'ans']")
    if len(sub) != len(eval_manifest):
        raise MaskpipeError(f"submission: {len(sub)} rows for {len(eval_manifest)} eval images")
    if sub["ImageID"].duplicated().any() or list(sub["ImageID"]) != list(eval_manifest["key"]):
        raise MaskpipeError("submission: ImageIDs are not the eval images once each in info.csv order")
    ans = sub["ans"]
    if not pd.api.types.is_integer_dtype(ans) or ans.min() < 0 or ans.max() >= NUM_CLASSES:
        raise MaskpipeError(f"submission: ans must be integers 0..{NUM_CLASSES - 1}")


def write_submission(ensemble_test: Path, eval_manifest: Path, out: Path) -> pd.DataFrame:
    """Build, check and write the submission."""
    probs = read_csv(ensemble_test, required=["key", *PROB_COLUMNS], dtype={"key": str})
    manifest = read_csv(eval_manifest, required=["key"], dtype={"key": str})
    sub = make_submission(probs, manifest)
    write_csv(sub, out)
    return sub
