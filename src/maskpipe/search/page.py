"""``search/report.html``: the trials, best first, and the importance plot on one page.

Built from the report's markup helpers; like the report, it embeds its figure and CSS and holds
nothing that depends on the clock, so an unchanged search leaves the file untouched.
"""

from __future__ import annotations

import pandas as pd

from maskpipe.report.markup import card, esc, fixed, img, join, table

_CSS = """
body{margin:0 auto;max-width:1100px;padding:1rem 1.5rem;color:#1f2933;
  font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
.cards{display:flex;flex-wrap:wrap;gap:.8rem}
.card{flex:1 1 150px;border:1px solid #e4e7eb;border-radius:8px;padding:.6rem .9rem}
.card .label{font-size:.8rem;color:#616e7c;text-transform:uppercase}
.card .value{font-size:1.5rem;font-weight:600}
.card .note{font-size:.8rem;color:#7b8794}
table{border-collapse:collapse;font-size:.88rem;margin:.6rem 0;display:block;overflow-x:auto}
th{background:#f0f3f7;text-align:left}
th,td{padding:.3rem .75rem;border-bottom:1px solid #e4e7eb}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
tr.hl td{background:#fff3c4;font-weight:600}
img{max-width:100%;height:auto}
"""


def page(study_name: str, trials: pd.DataFrame, importance: bytes | None, best) -> str:
    """The HTML page of a search: summary cards, the sorted trials table, the importance plot."""
    done = int((trials["state"] == "COMPLETE").sum()) if len(trials) else 0
    cards = [card("best out-of-fold macro F1", f"{best.value:.4f}" if best else "–",
                  f"trial {best.number}" if best else "no completed trial"),
             card("completed trials", str(done), f"{len(trials) - done} failed or waiting")]
    formats = {"score": fixed(4), **({"seconds": fixed(1)} if "seconds" in trials else {})}
    highlight = [best is not None and n == best.number for n in trials.get("number", [])]
    plot = (img(importance, "parameter importance (Optuna, fANOVA)") if importance else
            "<p>No importance plot: it needs 2 completed trials and a parameter that varied.</p>")
    body = join(
        f'<div class="cards">{"".join(cards)}</div>',
        "<h2>Trials, best first</h2>",
        "<p>Each trial is one model config trained and predicted by the pipeline's train and "
        "predict steps on the search's folds; its score is the out-of-fold macro F1 on those folds' "
        "validation persons. <code>best.yaml</code> beside this page is the best trial as a "
        "recipe.</p>",
        table(trials, formats, highlight) if len(trials) else "<p>No trials yet.</p>",
        "<h2>Parameter importance</h2>", plot)
    return ('<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{esc('search ' + study_name)}</title>\n<style>{_CSS}</style>\n</head>\n"
            f"<body>\n<h1>Hyperparameter search {esc(study_name)}</h1>\n{body}\n</body>\n</html>\n")
