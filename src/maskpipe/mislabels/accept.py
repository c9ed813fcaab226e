"""Turn accepted suspects into corrections, appended to the file the ``labels`` step reads.

Nothing is changed silently: the corrections file only grows, by whole entries at its end, each
with a reason that quotes the evidence and the OOF macro F1 at ranking time; an entry that is
already there is skipped, and one that contradicts an existing entry is refused with its line.
The new text is parsed back before it replaces the file (atomically), so a file whose ``fixes``
list cannot be appended to is left as it was.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pandas as pd
import yaml

from maskpipe.io import MaskpipeError, atomic_path
from maskpipe.data.labels import read_corrections

log = logging.getLogger(__name__)

#: Values of the suspects.csv ``accept`` column that mean "accept this one".
YES = ("yes", "y", "x", "1", "true")
#: How a reason starts, and the phrase the report reads the before-F1 from.
REASON_PREFIX = "mislabels:"
F1_PATTERN = re.compile(r"OOF macro F1 ([0-9.]+) when ranked")
_NEW_FILE = ("# Label corrections read by the labels step (docs/labels.md).\n"
             "# `maskpipe mislabels --accept` appends to this file.\n"
             "fixes:\n")


def select(suspects: pd.DataFrame, wanted: list[str], source: str) -> pd.DataFrame:
    """The rows named by suspect id (``PERSON:TASK``) or by person, one row per name.

    Raises:
        MaskpipeError: a name matches no row, or a person has several suspects.
    """
    picked = []
    for name in wanted:
        rows = suspects[suspects["suspect"] == name]
        if rows.empty:
            rows = suspects[suspects["person"] == name]
        if rows.empty:
            raise MaskpipeError(f"{source}: no suspect {name!r} (give a person or a suspect id "
                                "from the suspect column)")
        if len(rows) > 1:
            raise MaskpipeError(f"{source}: person {name!r} has {len(rows)} suspects "
                                f"({', '.join(rows['suspect'])}); name one of them")
        picked.append(rows)
    return pd.concat(picked) if picked else suspects.iloc[:0]


def marked(suspects: pd.DataFrame) -> pd.DataFrame:
    """The rows whose ``accept`` column says yes (``yes``, ``y``, ``x``, ``1`` or ``true``)."""
    if "accept" not in suspects:
        return suspects.iloc[:0]
    return suspects[suspects["accept"].astype(str).str.strip().str.lower().isin(YES)]


def fixes_for(rows: pd.DataFrame, summary: dict) -> list[dict]:
    """One correction per row, its reason quoting the evidence (see the module)."""
    fixes = []
    for r in rows.itertuples(index=False):
        value: object = r.fix_value
        if r.fix_kind == "age":
            value = int(r.fix_value)
        elif r.fix_kind == "swap_incorrect_normal":
            value = True
        where = f" {r.image}" if r.task == "mask" else ""
        reason = (f"{REASON_PREFIX} {r.task}{where} {r.given} -> {r.suggested}, p={float(r.p_suggested):.2f}, "
                  f"cleanlab {summary.get('method', '?')} {float(r.score):.3f}, rank {r.rank}; "
                  f"OOF macro F1 {float(summary['oof_macro_f1']):.4f} when ranked")
        fixes.append({"person": r.person, r.fix_kind: value, "reason": reason})
    return fixes


def _kind(fix: dict) -> str:
    return next(k for k in fix if k not in ("person", "reason", "__line__"))


def _same_person(existing: str, person: str) -> bool:
    # Existing entries may name a person by folder or by id (the folder name's first part).
    return str(existing) in (person, person.split("_")[0])


def _scalar(value: object) -> str:
    # JSON scalars are valid YAML flow scalars, and json.dumps quotes every string safely.
    return json.dumps(value)


def append_fixes(path: Path, fixes: list[dict], source: str) -> int:
    """Append ``fixes`` to the corrections file ``path`` (created if missing); return how many.

    Raises:
        MaskpipeError: a fix contradicts an entry of the file (naming its line), or the file's
            ``fixes`` list is not where appended entries would land.
    """
    path = Path(path)
    text = path.read_text() if path.is_file() else ""
    if not text.strip():
        text = _NEW_FILE
    elif _yaml(text, path) is None:  # only comments so far
        text += ("" if text.endswith("\n") else "\n") + "fixes:\n"
    # block style, to append to ([ \t], not \s: a newline must not be eaten with the lines after it)
    text = re.sub(r"^fixes:[ \t]*\[[ \t]*\][ \t]*(#.*)?$", "fixes:", text, flags=re.M)
    existing = _read(text, path)
    new = []
    for fix in fixes:
        kind = _kind(fix)
        clash = [e for e in existing if _same_person(e["person"], fix["person"]) and kind in e]
        if kind == "drop_image":  # a set of photos: another photo of the person adds to it
            dropped = {s for e in clash for s in ([e[kind]] if isinstance(e[kind], str) else e[kind])}
            if fix[kind] in dropped:
                log.warning("%s: %s already drops %s; skipped", path, fix["person"], fix[kind])
                continue
            clash = []
        if any(e[kind] == fix[kind] for e in clash):
            log.warning("%s: %s already has %s: %s; skipped", path, fix["person"], kind, fix[kind])
            continue
        if clash:
            raise MaskpipeError(f"{path}:{clash[0]['__line__']}: {fix['person']} already has a {kind} "
                                f"fix ({clash[0][kind]!r}); edit that entry by hand instead of accepting "
                                f"{kind}: {fix[kind]!r}")
        new.append(fix)
    if not new:
        return 0
    lines = text.splitlines()
    first = existing[0]["__line__"] - 1 if existing else None
    m = re.match(r"^(\s*)-(\s+)", lines[first]) if first is not None else None
    dash, gap = (m.group(1), m.group(2)) if m else ("  ", " ")
    body = [f"{dash}# appended by maskpipe mislabels --accept from {source}"]
    for fix in new:
        kind = _kind(fix)
        body.append(f"{dash}-{gap}person: {_scalar(fix['person'])}")
        pad = dash + " " * (1 + len(gap))
        body += [f"{pad}{kind}: {_scalar(fix[kind])}", f"{pad}reason: {_scalar(fix['reason'])}"]
    updated = text + ("" if text.endswith("\n") else "\n") + "\n".join(body) + "\n"
    with atomic_path(path) as tmp:
        tmp.write_text(updated)
        after = _read(updated, path)
        if len(after) != len(existing) + len(new) or any(_kind(a) not in a for a in after[len(existing):]):
            raise MaskpipeError(f"{path}: cannot append to its 'fixes' list (is it the last block of "
                                "the file?); add the fixes by hand")
    return len(new)


def _yaml(text: str, path: Path) -> object:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise MaskpipeError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from e


def _read(text: str, path: Path) -> list[dict]:
    """Parse corrections text through the labels step's own reader (same checks, same lines)."""
    import tempfile

    doc = _yaml(text, path)
    if isinstance(doc, dict) and doc.get("fixes") is None and set(doc) == {"fixes"}:
        return []  # "fixes:" with no entries yet
    with tempfile.TemporaryDirectory() as d:
        probe = Path(d) / path.name
        probe.write_text(text)
        try:
            return read_corrections(probe)
        except MaskpipeError as e:
            raise MaskpipeError(str(e).replace(str(probe), str(path))) from e
