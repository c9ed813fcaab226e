"""The ``persons`` step: every eval photo's group (a person, as far as the photos tell) and how
sure that is."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from maskpipe.images import LOOK, look, read_rgb
from maskpipe.io import MaskpipeError, read_csv, write_csv
from maskpipe.persons.group import Grouping, face, group_persons

log = logging.getLogger(__name__)

#: Columns of the step's output, one row per eval photo in manifest order.
COLUMNS = ["key", "group", "size", "confidence"]


def read_features(manifest: pd.DataFrame, root: Path, crops: np.ndarray,
                  index: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Each manifest photo's look (from its image under ``root``) and face (from its crop)."""
    rows = index.set_index("key")["row"]
    missing = manifest.loc[~manifest["key"].isin(rows.index), "key"]
    if len(missing):
        raise MaskpipeError(f"persons: eval photo {missing.iloc[0]!r} has no crop in the crop index")
    # Read as the crop step reads them (EXIF orientation, 16-bit, transparency); JPEGs decoded
    # at a reduced scale still several times the thumbnail's size: about 3x faster than a full
    # decode, the look within 0.01 (RMS) of the full one.
    looks = [look(read_rgb(root / path, draft=max(LOOK))) for path in manifest["path"]]
    faces = np.stack([face(crops[r]) for r in rows.loc[manifest["key"]].to_numpy()])
    return np.stack(looks), faces


def group_eval_photos(eval_manifest: Path, root: Path, eval_crops: Path, eval_index: Path, grouping: Grouping,
        out_groups: Path) -> pd.DataFrame:
    """Group the eval photos; write ``key, group, size, confidence`` in manifest order."""
    manifest = read_csv(eval_manifest, required=["key", "path"], dtype={"key": str})
    index = read_csv(eval_index, required=["key", "row"], dtype={"key": str})
    crops = np.load(eval_crops, mmap_mode="r")
    looks, faces = read_features(manifest, root, crops, index)
    groups, conf = group_persons(looks, faces, grouping)
    sizes = np.bincount(groups)[groups] if len(groups) else np.zeros(0, dtype=np.int64)
    table = pd.DataFrame({"key": manifest["key"], "group": groups, "size": sizes,
                          "confidence": np.round(conf, 4)}, columns=COLUMNS)
    write_csv(table, out_groups)
    whole = int((np.bincount(groups) == grouping.size).sum()) if len(groups) else 0
    log.info("persons: %d eval photos in %d groups, %d of them of %d photos", len(table),
             len(np.unique(groups)), whole, grouping.size)
    return table
