"""The report's "Suspected mislabels" section: the top suspects, and what accepting fixes changed.

"Before" is known because every fix ``maskpipe mislabels --accept`` appends quotes the ensemble's
OOF macro F1 at ranking time in its reason ("... OOF macro F1 0.8123 when ranked"); the labels
step carries reasons into ``corrections_applied.csv``. "After" is this run's OOF macro F1. The two
are scored against different labels (before: the uncorrected ones), so the change mixes a better
model with a fairer yardstick; the section says so.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from maskpipe.mislabels.accept import F1_PATTERN, REASON_PREFIX
from maskpipe.report import figures
from maskpipe.report.inputs import Run
from maskpipe.report.markup import Figures, card, esc, f3, join, signed, table

#: Suspects shown as thumbnails and listed (2 rows of 6).
TOP_SUSPECTS = 12
#: The photo that stands for a suspect: the one it is about, else the unmasked face.
_PHOTO = {"swap": "incorrect_mask"}


def accepted_fixes(corrections: pd.DataFrame) -> tuple[pd.DataFrame, float | None]:
    """The applied fixes that came from ``mislabels --accept`` and the F1 before the first of them."""
    mine = corrections[corrections["reason"].astype(str).str.startswith(REASON_PREFIX)]
    recorded = [float(m.group(1)) for m in mine.sort_values("line")["reason"].map(F1_PATTERN.search) if m]
    return mine, (recorded[0] if recorded else None)


def _before_after(r: Run) -> str:
    mine, before = accepted_fixes(r.corrections)
    if mine.empty:
        return ("<p>No fix from <code>maskpipe mislabels --accept</code> is applied in this run; accepting "
                "some and rerunning shows here what they changed.</p>")
    now = float(r.metrics["oof_macro_f1"])
    cards = [card("Fixes accepted from mislabels", f"{len(mine)}", "applied by the labels step"),
             card("OOF macro F1 when ranked", f3(before), "before the accepted fixes"),
             card("OOF macro F1 now", f3(now), f"change {signed(None if before is None else now - before)}")]
    return join(
        f'<div class="cards">{"".join(cards)}</div>',
        "<p>The earlier figure was scored against the labels before the fixes, this run's against the "
        "corrected ones: the change mixes models trained on cleaner labels with a fairer yardstick.</p>",
    )


def section(r: Run, figs: Figures) -> str:
    s, summary = r.suspects, r.suspects_summary
    intro = (f"<p>{int(summary['suspects'])} label(s) the ensemble's out-of-fold predictions disagree "
             f"with, ranked by cleanlab's <code>{esc(summary['method'])}</code> label quality (lower = "
             "more suspect; gender and age per person, mask per photo, incorrect/normal swaps as pairs). "
             "The review page <code>mislabels/review.html</code> shows each suspect's photos; "
             "<code>maskpipe mislabels --accept SUSPECT</code> appends its fix to the corrections file.</p>")
    parts = [intro]
    if len(s):
        top = s.head(TOP_SUSPECTS)
        keys = r.labels.set_index(["person", "stem"])["key"]
        rows = r.crops_train.set_index("key")["row"].astype(int)
        images, captions = [], []
        for t in top.itertuples(index=False):
            stems = r.labels.loc[r.labels["person"] == t.person, "stem"].tolist()
            want = t.image if t.task == "mask" else _PHOTO.get(t.task, "normal")
            stem = want if want in stems else stems[0]
            images.append(np.asarray(r.crop_images[rows[keys[(t.person, stem)]]]))
            captions.append(f"#{t.rank} {t.person}\n{t.task}: {t.given} → {t.suggested}")
        parts.append(figs.embed("mislabels", figures.thumbnails(images, captions), "top suspected mislabels"))
        listing = top[["rank", "suspect", "given", "suggested", "score", "p_suggested", "flagged"]]
        parts.append(table(listing))
    parts += ["<h3>Accepted fixes</h3>", _before_after(r)]
    return join(*parts)
