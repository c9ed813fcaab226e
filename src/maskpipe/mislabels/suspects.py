"""Files in, files out for ``maskpipe mislabels`` (ranking) and ``--accept``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from maskpipe.classes import PROB_COLUMNS
from maskpipe.io import MaskpipeError, read_csv, write_bytes_if_changed, write_csv, write_json
from maskpipe.metrics import macro_f1
from maskpipe.mislabels import accept as accept_mod
from maskpipe.mislabels.rank import rank_suspects
from maskpipe.mislabels.review import review_page

log = logging.getLogger(__name__)

_LABEL_COLUMNS = ["key", "person", "stem", "mask", "gender_id", "age_group", "age", "label"]


def load_table(oof_path: Path, labels_path: Path) -> tuple[pd.DataFrame, np.ndarray]:
    """The labelled photos in OOF order and their 18-class OOF probabilities.

    Raises:
        MaskpipeError: a file lacks a column, or the two files do not hold the same photos and labels.
    """
    oof = read_csv(oof_path, ["key", "person", "label", "pred", *PROB_COLUMNS], dtype={"key": str, "person": str})
    labels = read_csv(labels_path, _LABEL_COLUMNS, dtype={"key": str, "person": str, "id": str})
    missing = ~oof["key"].isin(labels["key"])
    if missing.any() or len(oof) != len(labels):
        key = oof["key"][missing].iloc[0] if missing.any() else "(counts differ)"
        raise MaskpipeError(f"{oof_path}: does not cover the photos of {labels_path} "
                            f"({len(oof)} vs {len(labels)} rows; e.g. key {key!r}); rerun the ensemble")
    table = labels.set_index("key").loc[oof["key"]].reset_index()
    stale = table["label"].to_numpy() != oof["label"].to_numpy()
    if stale.any():
        raise MaskpipeError(f"{oof_path}: key {oof['key'][stale].iloc[0]!r} has label "
                            f"{oof['label'][stale].iloc[0]}, but {labels_path} says "
                            f"{table['label'][stale].iloc[0]}; rerun the ensemble")
    return table, oof[PROB_COLUMNS].to_numpy(dtype=np.float64)


def rank_mislabels(oof_path: Path, labels_path: Path, crops_path: Path, crop_index_path: Path, method: str,
        top: int, thumbnail: int, out_suspects: Path, out_review: Path, out_summary: Path) -> dict:
    """Rank the suspects; write ``suspects.csv``, ``review.html`` and ``summary.json``.

    ``summary.json`` records the ensemble's OOF macro F1 at ranking time: accepted fixes quote it
    in their reason, and the report compares it with the F1 after the rerun.
    """
    table, probs = load_table(oof_path, labels_path)
    index = read_csv(crop_index_path, ["key", "row"], dtype={"key": str})
    rows = index.set_index("key")["row"].astype(int)
    missing = table.loc[~table["key"].isin(rows.index), "key"]
    if len(missing):
        raise MaskpipeError(f"{crop_index_path}: no crop for {len(missing)} labelled image(s), e.g. "
                            f"{missing.iloc[0]!r}; rerun the crop step")
    suspects = rank_suspects(table, probs, method)
    pred = probs.argmax(axis=1)
    summary = {
        "method": method,
        "oof_macro_f1": round(macro_f1(table["label"].to_numpy(), pred), 6),
        "persons": int(table["person"].nunique()), "images": len(table), "suspects": len(suspects),
        "by_task": {t: int(n) for t, n in suspects["task"].value_counts().sort_index().items()},
        "flagged": int(suspects["flagged"].sum()),
    }
    write_csv(suspects.round({"score": 6, "p_suggested": 4}), out_suspects)
    crops = np.load(crops_path, mmap_mode="r")
    page = review_page(suspects.head(top), table, probs, crops, rows, summary, thumbnail)
    write_bytes_if_changed(out_review, page.encode())
    write_json(summary, out_summary)
    log.info("mislabels: %d suspect(s) (%s); %d flagged by cleanlab; review page %s", len(suspects),
             ", ".join(f"{t} {n}" for t, n in summary["by_task"].items()) or "none", summary["flagged"],
             out_review)
    return summary


def accept(suspects_path: Path, summary_path: Path, corrections: str | None, wanted: list[str],
           marked: bool) -> int:
    """Append the fixes of the named (or, with ``marked``, the accept-marked) suspects.

    Raises:
        MaskpipeError: no corrections file is configured, a name matches no single suspect, or a
            fix conflicts with one already in the file.
    """
    if not corrections:
        raise MaskpipeError("labels.corrections is null in the config: name a YAML file there "
                            "(it is created if missing) so accepted fixes have a place to go")
    suspects = read_csv(suspects_path, ["suspect", "person", "task", "fix_kind", "fix_value"],
                        dtype=str, keep_default_na=False)
    try:
        summary = json.loads(Path(summary_path).read_text())
    except (FileNotFoundError, json.JSONDecodeError) as e:
        raise MaskpipeError(f"{summary_path}: cannot read the ranking's summary ({e})") from e
    chosen = accept_mod.select(suspects, wanted, str(suspects_path))
    if marked:
        chosen = pd.concat([chosen, accept_mod.marked(suspects)]).drop_duplicates("suspect")
    if chosen.empty:
        raise MaskpipeError(f"{suspects_path}: nothing to accept (name suspects, or mark their "
                            "accept column with yes and pass --accept-marked)")
    fixes = accept_mod.fixes_for(chosen, summary)
    added = accept_mod.append_fixes(Path(corrections), fixes, source=Path(suspects_path).name)
    log.info("mislabels: %d fix(es) appended to %s (%d already there); rerun the pipeline to apply them",
             added, corrections, len(fixes) - added)
    return added
