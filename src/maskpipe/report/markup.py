"""HTML building blocks of the report: escaped text, tables, cards and embedded figures."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from maskpipe import classes


def esc(value: object) -> str:
    """``value`` as text that is safe inside HTML elements and attributes."""
    return html.escape(str(value))


def f3(value: float | None) -> str:
    """Three decimals, or a dash for a missing value."""
    return "–" if value is None or pd.isna(value) else f"{value:.3f}"


def signed(value: float | None) -> str:
    """Three decimals with a sign (a gain), or a dash for a missing value."""
    return "–" if value is None or pd.isna(value) else f"{value:+.3f}"


def pct(value: float) -> str:
    """A share as a percentage with one decimal."""
    return "–" if pd.isna(value) else f"{100 * value:.1f}%"


def fixed(decimals: int) -> Callable[[float], str]:
    """A formatter with a fixed number of decimals, for :func:`table`."""
    return lambda value: "–" if pd.isna(value) else f"{value:.{decimals}f}"


def img(png: bytes, alt: str) -> str:
    """A PNG embedded as a data URL, so the page needs no other file."""
    data = base64.b64encode(png).decode("ascii")
    return f'<figure><img alt="{esc(alt)}" src="data:image/png;base64,{data}"></figure>'


class Figures:
    """The figures of a page by file name (without ``.png``), in the order they were embedded."""

    def __init__(self) -> None:
        self.pngs: dict[str, bytes] = {}

    def embed(self, name: str, png: bytes, alt: str) -> str:
        """Keep ``png`` as ``<name>.png`` and return its ``<figure>`` element.

        Raises:
            ValueError: ``name`` is taken (two figures would overwrite one file).
        """
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", name)  # model names end up in file names
        if name in self.pngs:
            raise ValueError(f"report: two figures named {name}.png")
        self.pngs[name] = png
        return img(png, alt)


def table(df: pd.DataFrame, formats: dict[str, Callable[[object], str]] | None = None,
          highlight: Sequence[bool] | None = None) -> str:
    """An HTML table; numbers right-aligned, floats with 3 decimals unless ``formats`` says else."""
    formats = formats or {}
    numeric = {c for c in df.columns if pd.api.types.is_numeric_dtype(df[c]) or c in formats}
    attr = {c: ' class="num"' if c in numeric else "" for c in df.columns}
    head = "".join(f"<th{attr[c]}>{esc(c)}</th>" for c in df.columns)
    rows = []
    for i, rec in enumerate(df.itertuples(index=False)):
        cells = []
        for c, v in zip(df.columns, rec, strict=True):
            if c in formats:
                text = formats[c](v)
            elif pd.api.types.is_float_dtype(df[c]):
                text = f3(v)
            else:
                text = str(v)
            cells.append(f"<td{attr[c]}>{esc(text)}</td>")
        cls = ' class="hl"' if highlight is not None and highlight[i] else ""
        rows.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def join(*parts: str) -> str:
    """The non-empty parts, one per line."""
    return "\n".join(p for p in parts if p)


def card(label: str, value: str, note: str = "", big: bool = False) -> str:
    """A labelled number for the summary row."""
    cls = "card big" if big else "card"
    note_html = f'<div class="note">{esc(note)}</div>' if note else ""
    return (f'<div class="{cls}"><div class="label">{esc(label)}</div>'
            f'<div class="value">{esc(value)}</div>{note_html}</div>')


def counts(labels: pd.Series | np.ndarray) -> np.ndarray:
    """Images per class, all 18 classes."""
    return np.bincount(np.asarray(labels, dtype=int), minlength=classes.NUM_CLASSES)
