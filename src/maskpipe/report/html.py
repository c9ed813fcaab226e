"""The ``report`` step: one self-contained HTML page that summarises a whole run.

Figures are embedded as base64 PNGs and the CSS is inline, so the file opens offline and can be
mailed on its own. Nothing in it depends on the clock, the machine or the input paths, so an
unchanged rerun (with the same matplotlib) leaves the file and its mtime untouched.
"""

from __future__ import annotations

import base64
import html
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix

from maskpipe import classes
from maskpipe.io import write_bytes_if_changed
from maskpipe.report import figures
from maskpipe.report.inputs import STRATUM_NAMES, ReportInputs, Run, load

log = logging.getLogger(__name__)

def build_report(inputs: ReportInputs, title: str, out: Path) -> None:
    """Write the run's HTML report to ``out``, leaving ``out`` untouched if its content is unchanged.

    Args:
        inputs: the run's files (see :class:`ReportInputs`).
        title: the page title and heading, e.g. the run's name.
        out: where the HTML goes; its folder is created.

    Raises:
        MaskpipeError: an input file is missing or unreadable, lacks a column or key, or holds a
            class outside 0..17.
    """
    run = load(inputs)
    body = "\n".join(f'<section id="{anchor}"><h2>{_esc(heading)}</h2>\n{content(run)}\n</section>'
                     for anchor, heading, content in _SECTIONS)
    page = _page(title, body)
    changed = write_bytes_if_changed(out, page.encode())
    log.info("%s %s (%d KiB)", "wrote" if changed else "unchanged:", out, len(page) // 1024)


# --- HTML primitives -----------------------------------------------------------------------


def _esc(value: object) -> str:
    return html.escape(str(value))


def _f3(value: float) -> str:
    return "–" if pd.isna(value) else f"{value:.3f}"


def _pct(value: float) -> str:
    return "–" if pd.isna(value) else f"{100 * value:.1f}%"


def _fixed(decimals: int) -> Callable[[float], str]:
    return lambda value: "–" if pd.isna(value) else f"{value:.{decimals}f}"


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<figure><img alt="{_esc(alt)}" src="data:image/png;base64,{data}"></figure>'


def _table(df: pd.DataFrame, formats: dict[str, Callable[[object], str]] | None = None,
           highlight: Sequence[bool] | None = None) -> str:
    """An HTML table; numbers right-aligned, floats with 3 decimals unless ``formats`` says else."""
    formats = formats or {}
    numeric = {c for c in df.columns if pd.api.types.is_numeric_dtype(df[c]) or c in formats}
    attr = {c: ' class="num"' if c in numeric else "" for c in df.columns}
    head = "".join(f"<th{attr[c]}>{_esc(c)}</th>" for c in df.columns)
    rows = []
    for i, rec in enumerate(df.itertuples(index=False)):
        cells = []
        for c, v in zip(df.columns, rec, strict=True):
            if c in formats:
                text = formats[c](v)
            elif pd.api.types.is_float_dtype(df[c]):
                text = _f3(v)
            else:
                text = str(v)
            cells.append(f"<td{attr[c]}>{_esc(text)}</td>")
        cls = ' class="hl"' if highlight is not None and highlight[i] else ""
        rows.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _join(*parts: str) -> str:
    return "\n".join(p for p in parts if p)


def _card(label: str, value: str, note: str = "", big: bool = False) -> str:
    cls = "card big" if big else "card"
    note_html = f'<div class="note">{_esc(note)}</div>' if note else ""
    return (f'<div class="{cls}"><div class="label">{_esc(label)}</div>'
            f'<div class="value">{_esc(value)}</div>{note_html}</div>')


def _counts(labels: pd.Series | np.ndarray) -> np.ndarray:
    return np.bincount(np.asarray(labels, dtype=int), minlength=classes.NUM_CLASSES)


# --- sections ------------------------------------------------------------------------------


def _summary(r: Run) -> str:
    m = r.metrics
    persons, manifest_persons = r.labels["person"].nunique(), r.manifest["person"].nunique()
    images, manifest_images = len(r.labels), len(r.manifest)
    n_models = len({t["model"] for t in r.train})
    cards = [
        _card("Ensemble OOF macro F1", _f3(m["oof_macro_f1"]), "out of fold, all training images", big=True),
        _card("Ensemble OOF accuracy", _f3(m["oof_accuracy"]), big=True),
        _card("Persons", f"{persons:,}", f"{manifest_persons - persons} dropped of {manifest_persons:,}"),
        _card("Training images", f"{images:,}", f"{manifest_images - images} dropped of {manifest_images:,}"),
        _card("Eval images", f"{len(r.submission):,}"),
        _card("Models × folds", f"{n_models} × {r.folds['fold'].nunique()}", f"{len(r.train)} trained"),
    ]
    tasks = " · ".join(f"{_esc(name)} F1 <b>{_f3(v)}</b>" for name, v in m["tasks"].items())
    return _join(
        *(f'<p class="warn">⚠ {_esc(w)}</p>' for w in r.warnings),
        f'<div class="cards">{"".join(cards)}</div>',
        f"<p>Per task (labels decoded from the 18 classes): {tasks}</p>",
        f'<p class="def"><b>How F1 is computed.</b> {_esc(m["f1_definition"])}</p>',
    )


def _data(r: Run) -> str:
    persons = r.labels.drop_duplicates("person")
    table = pd.crosstab(persons["gender"], persons["age_group"])
    table = table.reindex(index=list(classes.GENDER_NAMES), columns=range(3), fill_value=0)
    table.columns = list(classes.AGE_NAMES)
    table["total"] = table.sum(axis=1)
    table.loc["total"] = table.sum(axis=0)
    return _join(
        f"<p>{len(r.labels):,} images of {len(persons):,} persons after label corrections.</p>",
        _img(figures.class_balance(_counts(r.labels["label"])), "class balance"),
        _img(figures.age_histogram(persons["age"].to_numpy()), "age histogram"),
        "<h3>Persons by gender and age group</h3>",
        _table(table.rename_axis("persons").reset_index()),
    )


def _corrections(r: Run) -> str:
    changed = int((r.labels["label"] != r.labels["orig_label"]).sum())
    dropped = r.manifest["person"].nunique() - r.labels["person"].nunique()
    return _join(
        f"<p>{len(r.corrections)} correction(s) applied: {changed} image label(s) changed, "
        f"{dropped} person(s) and {len(r.manifest) - len(r.labels)} image(s) dropped.</p>",
        _table(r.corrections) if len(r.corrections) else "<p><i>none applied</i></p>",
    )


def _crop_row(name: str, df: pd.DataFrame) -> dict:
    detected = df["source"] == "detected"
    return {"images": name, "n": len(df), "detected": int(detected.sum()),
            "from person": int((df["source"] == "person").sum()),
            "fallback": int((df["source"] == "fallback").sum()),
            "fallback rate": (df["source"] == "fallback").mean() if len(df) else np.nan,
            "mean detection prob": df.loc[detected, "prob"].astype(float).mean()}


def _crops(r: Run) -> str:
    train = r.crops_train.merge(r.manifest[["key", "stem"]], on="key", how="left")
    rows = [_crop_row(f"train / {stem}", train[train["stem"] == stem]) for stem in classes.IMAGE_STEMS]
    rows += [_crop_row("train (all)", train), _crop_row("eval (all)", r.crops_eval)]
    df = pd.DataFrame(rows)
    total = pd.concat([r.crops_train, r.crops_eval])
    rate = (total["source"] == "fallback").mean() if len(total) else np.nan
    return _join(
        f"<p>Overall fallback rate <b>{_pct(rate)}</b>. Sources: <i>detected</i> (MTCNN found the "
        "face), <i>from person</i> (no face found; the median box of the same person's detected "
        "photos was used), <i>fallback</i> (the fixed region from <code>crop.fallback</code>).</p>",
        _table(df, {"fallback rate": _pct}, highlight=[n.endswith("(all)") for n in df["images"]]),
        "<h3>A random sample of training crops</h3>",
        _img(r.crop_sheets["sample"], "contact sheet of sampled crops"),
        "<h3>Every crop without its own detection</h3>"
        "<p>Frame colours: green detected, orange from the person's other photos, red fixed "
        "fallback region. Check that these still show a face.</p>",
        _img(r.crop_sheets["fallbacks"], "contact sheet of crops without a detection"),
    )


def _folds(r: Run) -> str:
    folds = r.folds.assign(fold=r.folds["fold"].astype(int), stratum=r.folds["stratum"].astype(int))
    counts = pd.crosstab(folds["fold"], folds["stratum"]).reindex(columns=range(6), fill_value=0)
    counts.columns = STRATUM_NAMES
    images = r.labels.merge(folds[["person", "fold"]], on="person").groupby("fold").size()
    table = counts.assign(persons=counts.sum(axis=1), images=images.reindex(counts.index, fill_value=0))
    return _join(
        "<p>All images of a person share one fold; folds are balanced on gender × age group.</p>",
        _img(figures.fold_strata(counts), "persons per fold by stratum"),
        _table(table.rename_axis("fold").reset_index()),
    )


def _training(r: Run) -> str:
    if not r.train:
        return "<p><i>no training metrics</i></p>"
    runs = sorted(r.train, key=lambda t: (t["model"], int(t["fold"])))
    parts = []
    for model in dict.fromkeys(t["model"] for t in runs):
        mine = [t for t in runs if t["model"] == model]
        histories = {int(t["fold"]): t["history"] for t in mine}
        best = {int(t["fold"]): int(t["best_epoch"]) for t in mine}
        parts.append(_img(figures.learning_curves(model, histories, best), f"learning curves of {model}"))
    table = pd.DataFrame([{
        "model": t["model"], "fold": int(t["fold"]), "arch": t.get("arch", ""), "device": t.get("device", ""),
        "epochs": len(h), "best epoch": int(t["best_epoch"]), "best val F1": float(t["best_val_f1"]),
        "n train": t.get("n_train", ""), "n val": t.get("n_val", ""),
        "minutes": h["seconds"].sum() / 60 if "seconds" in h else np.nan,
        "images/s": h["images_per_second"].mean() if "images_per_second" in h else np.nan,
    } for t in runs for h in [t["history"]]])
    return _join(*parts, _table(table, {"minutes": _fixed(1), "images/s": _fixed(0)}))


def _scores(r: Run) -> str:
    df = r.scores.assign(n=r.scores["n"].astype(int))
    return _join(
        "<p>Out-of-fold scores per model and fold; <code>all</code> is a model's whole OOF prediction. "
        "The ensemble row is highlighted.</p>",
        _table(df, highlight=list(df["model"] == "ensemble")),
    )


def _per_class(r: Run) -> str:
    f1 = np.asarray(r.metrics["per_class_f1"], dtype=float)
    png = figures.per_class_f1(f1, _counts(r.oof["label"]), float(r.metrics["oof_macro_f1"]))
    return _join("<p>n = true images of the class in the OOF predictions.</p>", _img(png, "per-class F1"))


def _confusion(r: Run) -> str:
    truth, pred = r.oof["label"].to_numpy(), r.oof["pred"].to_numpy()
    cm = confusion_matrix(truth, pred, labels=range(classes.NUM_CLASSES))
    panels = []
    tasks = zip(("mask", "gender", "age"), (classes.MASK_NAMES, classes.GENDER_NAMES, classes.AGE_NAMES),
                classes.decode(truth), classes.decode(pred), strict=True)
    for task, names, t, p in tasks:
        f1 = r.metrics["tasks"].get(task, np.nan)
        panels.append((f"{task} (F1 {_f3(f1)})", confusion_matrix(t, p, labels=range(len(names))), names))
    return _join(
        "<p>Ensemble out-of-fold predictions: rows are the true class, columns the prediction; cells show "
        "counts, colour the share of the true class's row.</p>",
        _img(figures.confusion(cm, classes.class_names(), "Ensemble OOF confusion (18 classes)"),
             "confusion matrix"),
        _img(figures.task_confusions(panels), "per-task confusion matrices"),
    )


def _submission(r: Run) -> str:
    sub, train = _counts(r.submission["ans"]), _counts(r.labels["label"])
    sub_p, train_p = sub / max(sub.sum(), 1), train / max(train.sum(), 1)
    table = pd.DataFrame({"class": range(classes.NUM_CLASSES), "name": classes.class_names(),
                          "training": train_p, "submission": sub_p, "submission n": sub})
    return _join(
        f"<p>{len(r.submission):,} predictions. A large gap to the training shares can mean a shift in "
        "the eval data or a systematic error (e.g. mask status mixed up).</p>",
        _img(figures.class_proportions({"training labels": train_p, "submission": sub_p}),
             "class proportions"),
        "<details><summary>Shares as a table</summary>"
        + _table(table, {"training": _pct, "submission": _pct}) + "</details>",
    )


#: (anchor, heading, content) of every section, in page order; the navigation bar follows it.
_SECTIONS: tuple[tuple[str, str, Callable[[Run], str]], ...] = (
    ("summary", "Summary", _summary),
    ("data", "Data", _data),
    ("corrections", "Label corrections", _corrections),
    ("crops", "Face crops", _crops),
    ("folds", "Folds", _folds),
    ("training", "Training", _training),
    ("scores", "Scores", _scores),
    ("per-class", "Per-class F1", _per_class),
    ("confusion", "Confusion matrix", _confusion),
    ("submission", "Submission", _submission),
)

_CSS = """
body{margin:0;background:#f4f6f9;color:#1f2933;
  font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
header{background:#1f2d3d;color:#fff;padding:1.2rem 2rem}
header h1{margin:0;font-size:1.6rem}
nav{position:sticky;top:0;z-index:1;background:#fff;border-bottom:1px solid #dde2e8;padding:.4rem 2rem}
nav a{color:#3b5b8c;text-decoration:none;margin-right:1.1rem;font-size:.9rem}
nav a:hover{text-decoration:underline}
main{max-width:1100px;margin:0 auto;padding:1rem 1.5rem 3rem}
section{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.08);
  padding:.6rem 1.6rem 1.2rem;margin:1.2rem 0;scroll-margin-top:2.5rem}
h2{font-size:1.3rem;border-bottom:2px solid #e4e7eb;padding-bottom:.3rem}
h3{font-size:1.05rem;margin-top:1.4rem}
.cards{display:flex;flex-wrap:wrap;gap:.8rem}
.card{flex:1 1 150px;border:1px solid #e4e7eb;border-radius:8px;padding:.6rem .9rem}
.card .label{font-size:.8rem;color:#616e7c;text-transform:uppercase;letter-spacing:.03em}
.card .value{font-size:1.5rem;font-weight:600}
.card .note{font-size:.8rem;color:#7b8794}
.card.big{flex:1 1 260px;background:#eef4fb;border-color:#bcd3ee}
.card.big .value{font-size:2.6rem;color:#1d4f91}
.def{background:#f8f9fb;border-left:4px solid #9fb3c8;padding:.5rem .9rem}
.warn{background:#fff4e5;border-left:4px solid #f0a030;padding:.4rem .9rem}
table{border-collapse:collapse;font-size:.88rem;margin:.6rem 0;display:block;overflow-x:auto}
th{background:#f0f3f7;text-align:left;font-weight:600}
th,td{padding:.3rem .75rem;border-bottom:1px solid #e4e7eb}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
tbody tr:nth-child(even){background:#fafbfc}
tr.hl td{background:#fff3c4;font-weight:600}
figure{margin:.8rem 0}
img{max-width:100%;height:auto}
details summary{cursor:pointer;color:#3b5b8c}
@media print{nav{display:none}section{box-shadow:none;break-inside:avoid}}
"""


def _page(title: str, body: str) -> str:
    nav = "".join(f'<a href="#{anchor}">{_esc(heading)}</a>' for anchor, heading, _ in _SECTIONS)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{_esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            f"<header><h1>{_esc(title)}</h1></header>\n<nav>{nav}</nav>\n<main>\n{body}\n</main>\n"
            f"</body>\n</html>\n")
