"""The ``labels`` step: apply person-level label corrections to the manifest.

A corrections file is YAML with a list under ``fixes``; each fix names a person (its folder name,
or its id where that id is unique: ids are not unique in the real data) and says why::

    fixes:
      - person: 006359_female_Asian_18
        gender: male
        reason: published by several teams; the photos show a man
      - person: "000020"
        swap_incorrect_normal: true
        reason: incorrect_mask and normal files are exchanged

Kinds: ``gender``, ``age``, ``swap_incorrect_normal``, ``drop_person``, ``drop_image`` (a stem or a
list of stems). An unknown person, or a fix that changes nothing, is an error naming its line.
The output keeps the original labels beside the corrected ones.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import yaml

from maskpipe import classes
from maskpipe.io import MaskpipeError

log = logging.getLogger(__name__)

FIX_KINDS = ("gender", "age", "swap_incorrect_normal", "drop_person", "drop_image")


class _LineLoader(yaml.SafeLoader):
    """Safe YAML loading that remembers each mapping's line, for error messages."""

    def construct_mapping(self, node, deep=False):
        mapping = super().construct_mapping(node, deep=deep)
        mapping["__line__"] = node.start_mark.line + 1
        return mapping


def read_corrections(path: Path) -> list[dict]:
    """Parse and shape-check a corrections file; every fix gets its ``__line__``."""
    if not path.is_file():
        raise MaskpipeError(f"{path}: corrections file not found")
    try:
        doc = yaml.load(path.read_text(), Loader=_LineLoader) or {}  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as e:
        raise MaskpipeError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from e
    fixes = doc.get("fixes") if isinstance(doc, dict) else None
    if not isinstance(fixes, list):
        raise MaskpipeError(f"{path}: expected a list under 'fixes'")
    for fix in fixes:
        where = f"{path}:{fix.get('__line__', '?') if isinstance(fix, dict) else '?'}"
        if not isinstance(fix, dict):
            raise MaskpipeError(f"{where}: each fix must be a mapping")
        unknown = set(fix) - {"person", "reason", "__line__", *FIX_KINDS}
        if unknown:
            raise MaskpipeError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} "
                                f"(kinds: {', '.join(FIX_KINDS)})")
        if not fix.get("person"):
            raise MaskpipeError(f"{where}: a fix needs 'person'")
        if not isinstance(fix.get("reason"), str) or not fix["reason"].strip():
            raise MaskpipeError(f"{where}: a fix needs a 'reason'")
        if not any(k in fix for k in FIX_KINDS):
            raise MaskpipeError(f"{where}: a fix needs one of {', '.join(FIX_KINDS)}")
    return fixes


def _resolve_person(key: str, persons: set[str], ids: dict[str, list[str]], where: str) -> str:
    key = str(key)
    if key in persons:
        return key
    matches = ids.get(key, [])
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise MaskpipeError(f"{where}: id {key!r} is ambiguous ({', '.join(matches)}); use the folder name")
    raise MaskpipeError(f"{where}: unknown person {key!r}")


def apply_corrections(manifest: pd.DataFrame, fixes: list[dict], source: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (corrected labels, table of applied fixes). The manifest is not modified."""
    df = manifest.copy()
    for col in ("gender", "age", "mask", "label"):
        df[f"orig_{col}"] = df[col]
    persons = set(df["person"])
    ids: dict[str, list[str]] = {}
    for person, pid in df[["person", "id"]].drop_duplicates().itertuples(index=False):
        ids.setdefault(str(pid), []).append(person)
    applied = []
    for fix in fixes:
        where = f"{source}:{fix['__line__']}"
        person = _resolve_person(fix["person"], persons, ids, where)
        rows = df["person"] == person
        if not rows.any():
            raise MaskpipeError(f"{where}: person {person!r} was already dropped")
        for kind in (k for k in FIX_KINDS if k in fix):
            value = fix[kind]
            old, new = _apply_one(df, rows, kind, value, where)
            applied.append({"line": fix["__line__"], "person": person, "fix": kind,
                            "old": old, "new": new, "reason": fix["reason"].strip()})
            rows = df["person"] == person
    df = df[df["_drop"] != True] if "_drop" in df else df  # noqa: E712
    df = df.drop(columns=["_drop"], errors="ignore")
    gender_id = df["gender"].map(classes.GENDER_BY_NAME).to_numpy()
    df["age_group"] = classes.age_bin(df["age"].to_numpy())
    df["label"] = classes.encode(df["mask"].to_numpy(), gender_id, df["age_group"].to_numpy())
    columns = ["line", "person", "fix", "old", "new", "reason"]
    return df.reset_index(drop=True), pd.DataFrame(applied, columns=columns)


def add_training_targets(labels: pd.DataFrame, train_age_bounds: tuple[int, int]) -> pd.DataFrame:
    """Add the targets training learns: per task and as the 18-class ``train_label``.

    ``train_age_bounds`` may differ from the official bins (teams trained "old" from 58 because
    the real >=60 class holds only people aged exactly 60); ``label`` and ``age_group`` stay
    official, and every score is computed against them.
    """
    lo, hi = train_age_bounds
    if not lo < hi:
        raise MaskpipeError(f"labels.train_age_bounds: {lo} must be below {hi}")
    out = labels.copy()
    out["gender_id"] = out["gender"].map(classes.GENDER_BY_NAME)
    out["train_age_group"] = classes.age_bin(out["age"].to_numpy(), (lo, hi))
    out["train_label"] = classes.encode(out["mask"].to_numpy(), out["gender_id"].to_numpy(),
                                        out["train_age_group"].to_numpy())
    return out


def _apply_one(df: pd.DataFrame, rows: pd.Series, kind: str, value, where: str) -> tuple[str, str]:
    if kind == "gender":
        if value not in classes.GENDER_BY_NAME:
            raise MaskpipeError(f"{where}: gender {value!r} is not male or female")
        old = df.loc[rows, "gender"].iloc[0]
        if old == value:
            raise MaskpipeError(f"{where}: gender is already {value!r}; the fix changes nothing")
        df.loc[rows, "gender"] = value
        return old, value
    if kind == "age":
        if not isinstance(value, int) or not 0 <= value <= 120:
            raise MaskpipeError(f"{where}: age {value!r} is not a whole number 0-120")
        old = int(df.loc[rows, "age"].iloc[0])
        if old == value:
            raise MaskpipeError(f"{where}: age is already {value}; the fix changes nothing")
        df.loc[rows, "age"] = value
        return str(old), str(value)
    if kind == "swap_incorrect_normal":
        if value is not True:
            raise MaskpipeError(f"{where}: swap_incorrect_normal takes only 'true'")
        inc = rows & (df["stem"] == "incorrect_mask")
        nor = rows & (df["stem"] == "normal")
        if not inc.any() or not nor.any():
            raise MaskpipeError(f"{where}: the person lacks an incorrect_mask or normal image to swap")
        # The files are exchanged: the incorrect_mask file shows no mask and vice versa.
        df.loc[inc, "mask"], df.loc[nor, "mask"] = classes.MASK_BY_STEM["normal"], classes.MASK_BY_STEM["incorrect_mask"]
        return "incorrect_mask<->normal", "swapped"
    if kind == "drop_person":
        if value is not True:
            raise MaskpipeError(f"{where}: drop_person takes only 'true'")
        df.loc[rows, "_drop"] = True
        return "kept", "dropped"
    stems = [value] if isinstance(value, str) else value
    if not isinstance(stems, list) or not stems:
        raise MaskpipeError(f"{where}: drop_image takes a stem or a list of stems")
    for stem in stems:
        hit = rows & (df["stem"] == stem)
        if not hit.any():
            raise MaskpipeError(f"{where}: the person has no image {stem!r}")
        df.loc[hit, "_drop"] = True
    return "kept", "dropped " + ",".join(stems)
