"""The review page: each top suspect with all of its person's photos as thumbnails.

One self-contained HTML file (thumbnails embedded as PNG data URLs), deterministic so an
unchanged rerun leaves it untouched. Under each photo: its file stem, its given mask status and
what the ensemble reads in it for the suspect's task.
"""

from __future__ import annotations

import base64
import html
import io

import numpy as np
import pandas as pd
from PIL import Image

from maskpipe import classes
from maskpipe.mislabels.rank import task_probs


def esc(value: object) -> str:
    """``value`` as text that is safe inside HTML elements and attributes (as
    ``report.markup.esc``; not imported from there, or every report edit would rerun this step)."""
    return html.escape(str(value))


_CSS = """
body{margin:0 auto;max-width:1150px;padding:1rem 1.5rem;color:#1f2933;
  font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:#f4f6f9}
.s{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.08);padding:.5rem 1rem;margin:.8rem 0}
.s h2{font-size:1.05rem;margin:.3rem 0}.meta{color:#52606d;font-size:.85rem}
.photos{display:flex;flex-wrap:wrap;gap:.5rem;margin-top:.4rem}
.photos figure{margin:0;text-align:center;font-size:.75rem;color:#52606d}
.photos img{display:block;border:3px solid transparent;border-radius:4px}
.photos .hit img{border-color:#c44e52}
code{background:#eef1f5;padding:0 .25rem;border-radius:3px}
"""


def _png(image: np.ndarray, height: int) -> str:
    img = Image.fromarray(np.asarray(image))
    width = max(1, round(img.width * height / img.height))
    buf = io.BytesIO()
    img.resize((width, height), Image.Resampling.BILINEAR).save(buf, format="PNG", optimize=False)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _reading(task: str, suggested: str, p: dict[str, np.ndarray], i: int) -> str:
    """What the ensemble sees in photo ``i`` for the suspect's task."""
    if task in ("gender", "age"):
        names = classes.GENDER_NAMES if task == "gender" else classes.AGE_NAMES
        return f"p({suggested})={p[task][i, names.index(suggested)]:.2f}"
    k = int(p["mask"][i].argmax())
    return f"reads {classes.MASK_NAMES[k]} ({p['mask'][i, k]:.2f})"


def review_page(suspects: pd.DataFrame, table: pd.DataFrame, probs: np.ndarray, crops: np.ndarray,
                crop_rows: pd.Series, summary: dict, thumbnail: int) -> str:
    """The HTML text of the review page.

    Args:
        suspects: the ranked suspects to show (``rank_suspects`` rows, most suspect first).
        table: one row per photo (``key, person, stem, mask``), rows as in ``probs``.
        probs: the photos' 18-class out-of-fold probabilities.
        crops: the crop step's N x H x W x 3 array (memory-mapped).
        crop_rows: the crop row of each photo key.
        summary: the ranking's summary (method, OOF macro F1, counts).
        thumbnail: thumbnail height in pixels.
    """
    p = task_probs(probs)
    order = {stem: i for i, stem in enumerate(classes.IMAGE_STEMS)}
    by_person = table.groupby("person", sort=False).indices
    cards = []
    for s in suspects.itertuples(index=False):
        idx = sorted(by_person[s.person], key=lambda i: order.get(table["stem"].iloc[i], 99))
        hits = {"swap": {"incorrect_mask", "normal"}, "mask": {s.image}}.get(s.task, set())
        photos = []
        for i in idx:
            stem = table["stem"].iloc[i]
            cls = ' class="hit"' if stem in hits else ""
            data = _png(crops[int(crop_rows[table["key"].iloc[i]])], thumbnail)
            caption = f"{stem} · {classes.MASK_NAMES[int(table['mask'].iloc[i])]}<br>" \
                      f"{esc(_reading(s.task, s.suggested, p, i))}"
            photos.append(f'<figure{cls}><img alt="{esc(stem)}" src="data:image/png;base64,{data}">'
                          f"<figcaption>{caption}</figcaption></figure>")
        flag = " · flagged by cleanlab" if s.flagged else ""
        cards.append(
            f'<div class="s" id="r{s.rank}"><h2>#{s.rank} {esc(s.person)} — {esc(s.task)}'
            f"{' ' + esc(s.image) if s.task == 'mask' else ''}: {esc(s.given)} → {esc(s.suggested)}</h2>"
            f'<div class="meta">score {s.score:.3f} · p(suggested) {s.p_suggested:.2f}{flag} · fix '
            f"<code>{esc(s.fix_kind)}: {esc(s.fix_value)}</code> · accept with "
            f"<code>maskpipe mislabels --accept {esc(s.suspect)}</code></div>"
            f'<div class="photos">{"".join(photos)}</div></div>')
    intro = (f"<p>{summary['suspects']} label(s) the out-of-fold predictions disagree with, among "
             f"{summary['persons']} persons and {summary['images']} photos; the {len(suspects)} most "
             f"suspect are shown. Score: cleanlab's <code>{esc(summary['method'])}</code> label "
             f"quality (lower = more likely wrong; gender and age per person, from the mean of its "
             f"photos). Ensemble OOF macro F1 when ranked: <b>{summary['oof_macro_f1']:.4f}</b>. "
             "Red frames mark the photos a mask suspect is about. Accept fixes with "
             "<code>maskpipe mislabels --accept SUSPECT...</code> or by writing <code>yes</code> in the "
             "accept column of suspects.csv and running <code>maskpipe mislabels --accept-marked</code>; "
             "they are appended to the corrections file, and the pipeline reruns from the labels step.</p>")
    body = "".join(cards) or "<p><i>No suspects: every label agrees with the predictions.</i></p>"
    return ('<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>Suspected mislabels</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            f"<h1>Suspected mislabels</h1>\n{intro}\n{body}\n</body>\n</html>\n")
