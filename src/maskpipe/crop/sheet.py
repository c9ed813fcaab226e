"""Contact sheets: a grid of crops in one PNG, for a person to glance over."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

#: Border colour per crop source: a person sees at once which crops did not come from a detection.
SOURCE_COLOURS = {"detected": (40, 160, 70), "second_pass": (40, 110, 210), "person": (230, 150, 20),
                  "shoot": (230, 150, 20), "fallback": (210, 40, 40)}


def contact_sheet(crops: np.ndarray, rows: Sequence[int], sources: Sequence[str],
                  columns: int = 12, thumb_height: int = 72, empty_text: str = "nothing to show") -> bytes:
    """PNG bytes of ``crops[rows]`` in a grid, each framed in its source's colour.

    Deterministic for the same input (no timestamps in the PNG), so an unchanged rerun writes the
    same bytes.
    """
    if len(rows) == 0:
        im = Image.new("RGB", (360, 40), (255, 255, 255))
        ImageDraw.Draw(im).text((10, 14), empty_text, fill=(90, 90, 90))
        return _png(im)
    h, w = crops.shape[1:3]
    tw = max(1, round(w * thumb_height / h))
    pad = 3
    cols = min(columns, len(rows))
    n_rows = -(-len(rows) // cols)
    sheet = Image.new("RGB", (cols * (tw + 2 * pad), n_rows * (thumb_height + 2 * pad)), (255, 255, 255))
    for i, (row, source) in enumerate(zip(rows, sources, strict=True)):
        thumb = Image.fromarray(np.asarray(crops[row])).resize((tw, thumb_height), Image.Resampling.BILINEAR)
        x, y = (i % cols) * (tw + 2 * pad), (i // cols) * (thumb_height + 2 * pad)
        ImageDraw.Draw(sheet).rectangle((x, y, x + tw + 2 * pad - 1, y + thumb_height + 2 * pad - 1),
                                        fill=SOURCE_COLOURS.get(source, (128, 128, 128)))
        sheet.paste(thumb, (x + pad, y + pad))
    return _png(sheet)


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=False)
    return buf.getvalue()
