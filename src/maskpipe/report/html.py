"""The ``report`` step: one self-contained HTML page that summarises a whole run.

Figures are embedded as base64 PNGs and the CSS is inline, so the file opens offline and can be
mailed on its own. Nothing in it depends on the clock, the machine or the input paths, so an
unchanged rerun (with the same matplotlib) leaves the file and its mtime untouched. The same
figures are also written as PNG files (for ``snakemake --report``) and the per-epoch scalars of
every model x fold as one CSV (for ``dvc plots``).

This module holds the sections on the data; :mod:`maskpipe.report.sections` those on the models.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from maskpipe import classes
from maskpipe.io import write_bytes_if_changed, write_csv
from maskpipe.report import figures, mislabels, rounds, sections
from maskpipe.report.inputs import STRATUM_NAMES, ReportInputs, Run, history_table, load
from maskpipe.report.markup import Figures, card, counts, esc, f3, join, pct, table
from maskpipe.report.persons import section as persons_section

log = logging.getLogger(__name__)


def build_report(inputs: ReportInputs, title: str, out: Path, figures_dir: Path | None = None,
                 history: Path | None = None) -> None:
    """Write the run's HTML report to ``out``, leaving every output whose content is unchanged untouched.

    Args:
        inputs: the run's files (see :class:`ReportInputs`).
        title: the page title and heading, e.g. the run's name.
        out: where the HTML goes; its folder is created.
        figures_dir: if given, a folder that receives every figure as ``<name>.png`` (stable names,
            e.g. ``confusion.png``, ``learning_curves_<model>.png``) and loses stale PNGs.
        history: if given, a CSV of every model x fold's per-epoch scalars
            (``model, fold, epoch, train_loss, val_loss, ...``).

    Raises:
        MaskpipeError: an input file is missing or unreadable, lacks a column or key, or holds a
            class outside 0..17.
    """
    run = load(inputs)
    figs = Figures()
    body = "\n".join(f'<section id="{anchor}"><h2>{esc(heading)}</h2>\n{content(run, figs)}\n</section>'
                     for anchor, heading, content in _SECTIONS)
    page = _page(title, body)
    changed = write_bytes_if_changed(out, page.encode())
    log.info("%s %s (%d KiB)", "wrote" if changed else "unchanged:", out, len(page) // 1024)
    if figures_dir is not None:
        _write_figures(Path(figures_dir), figs.pngs)
    if history is not None:
        write_csv(history_table(run.train), history)


def _write_figures(folder: Path, pngs: dict[str, bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    written = sum(write_bytes_if_changed(folder / f"{name}.png", png) for name, png in pngs.items())
    # A figure of a model no longer in the config must not linger in the folder.
    for stale in sorted(set(folder.glob("*.png")) - {folder / f"{name}.png" for name in pngs}):
        stale.unlink()
    log.info("%d figure(s) in %s, %d rewritten", len(pngs), folder, written)


# --- sections ------------------------------------------------------------------------------


def _summary(r: Run, figs: Figures) -> str:
    m = r.metrics
    persons, manifest_persons = r.labels["person"].nunique(), r.manifest["person"].nunique()
    images, manifest_images = len(r.labels), len(r.manifest)
    n_models = len({t["model"] for t in r.train})
    cards = [
        card("Ensemble OOF macro F1", f3(m["oof_macro_f1"]), "out of fold, all training images", big=True),
        card("Ensemble OOF accuracy", f3(m["oof_accuracy"]), big=True),
        card("Persons", f"{persons:,}", f"{manifest_persons - persons} dropped of {manifest_persons:,}"),
        card("Training images", f"{images:,}", f"{manifest_images - images} dropped of {manifest_images:,}"),
        card("Eval images", f"{len(r.submission):,}"),
        card("Models × folds", f"{n_models} × {r.folds['fold'].nunique()}", f"{len(r.train)} trained"),
    ]
    tasks = " · ".join(f"{esc(name)} F1 <b>{f3(v)}</b>" for name, v in m["tasks"].items())
    return join(
        *(f'<p class="warn">⚠ {esc(w)}</p>' for w in r.warnings),
        f'<div class="cards">{"".join(cards)}</div>',
        f"<p>Per task (labels decoded from the 18 classes): {tasks}</p>",
        f'<p class="def"><b>How F1 is computed.</b> {esc(m["f1_definition"])}</p>',
    )


def _data(r: Run, figs: Figures) -> str:
    persons = r.labels.drop_duplicates("person")
    groups = pd.crosstab(persons["gender"], persons["age_group"])
    groups = groups.reindex(index=list(classes.GENDER_NAMES), columns=range(3), fill_value=0)
    groups.columns = list(classes.AGE_NAMES)
    groups["total"] = groups.sum(axis=1)
    groups.loc["total"] = groups.sum(axis=0)
    return join(
        f"<p>{len(r.labels):,} images of {len(persons):,} persons after label corrections.</p>",
        figs.embed("class_balance", figures.class_balance(counts(r.labels["label"])), "class balance"),
        figs.embed("age_histogram", figures.age_histogram(persons["age"].to_numpy()), "age histogram"),
        "<h3>Persons by gender and age group</h3>",
        table(groups.rename_axis("persons").reset_index()),
    )


def _corrections(r: Run, figs: Figures) -> str:
    changed = int((r.labels["label"] != r.labels["orig_label"]).sum())
    dropped = r.manifest["person"].nunique() - r.labels["person"].nunique()
    return join(
        f"<p>{len(r.corrections)} correction(s) applied: {changed} image label(s) changed, "
        f"{dropped} person(s) and {len(r.manifest) - len(r.labels)} image(s) dropped.</p>",
        table(r.corrections) if len(r.corrections) else "<p><i>none applied</i></p>",
    )


#: What each crop source means, for the report's readers (see maskpipe.crop.SOURCES).
CROP_SOURCES = {
    "detected": "MTCNN found the face",
    "second_pass": "found by a second MTCNN pass with lower thresholds (crop.second_pass), and its "
                   "box agrees with the person's or shoot's",
    "person": "no face found: the median box of the person's detected photos",
    "shoot": "no face found: the median box of the detected photos of its shoot (eval photos that "
             "look alike: background, framing, light; crop.shoots)",
    "fallback": "nothing found in the photo or its person or shoot: the fixed crop.fallback region",
}


def _crop_row(name: str, df: pd.DataFrame) -> dict:
    found = df["source"].isin(["detected", "second_pass"])
    return {"images": name, "n": len(df),
            **{source: int((df["source"] == source).sum()) for source in CROP_SOURCES},
            "fallback rate": (df["source"] == "fallback").mean() if len(df) else np.nan,
            "mean detection prob": df.loc[found, "prob"].astype(float).mean()}


def _split_sources(name: str, df: pd.DataFrame) -> str:
    """How one split was cropped: photos and share per crop source."""
    n = df["source"].value_counts().reindex(list(CROP_SOURCES), fill_value=0)
    rows = pd.DataFrame({"source": n.index, "photos": n.to_numpy(),
                         "share": n.to_numpy() / max(1, len(df)),
                         "meaning": [CROP_SOURCES[s] for s in n.index]})
    own = 1 - (df["source"] == "fallback").mean() if len(df) else np.nan
    return join(f"<h3>{esc(name)}: {len(df)} photos, {pct(own)} with a box found on their own face "
                "or their person's or shoot's photos</h3>", table(rows, {"share": pct}))


def _crops(r: Run, figs: Figures) -> str:
    train = r.crops_train.merge(r.manifest[["key", "stem"]], on="key", how="left")
    rows = [_crop_row(f"train / {stem}", train[train["stem"] == stem]) for stem in classes.IMAGE_STEMS]
    rows += [_crop_row("train (all)", train), _crop_row("eval (all)", r.crops_eval)]
    df = pd.DataFrame(rows)
    total = pd.concat([r.crops_train, r.crops_eval])
    rate = (total["source"] == "fallback").mean() if len(total) else np.nan
    return join(
        f"<p>Overall fallback rate <b>{pct(rate)}</b>. Train and eval photos are cropped alike: "
        "a photo without a face found takes the box of its person's photos (train) or of its "
        "shoot's (eval photos grouped by how alike they look), so both splits see one framing.</p>",
        _split_sources("train", r.crops_train),
        _split_sources("eval", r.crops_eval),
        "<h3>By image kind</h3>",
        table(df, {"fallback rate": pct}, highlight=[n.endswith("(all)") for n in df["images"]]),
        "<h3>A random sample of training crops</h3>",
        figs.embed("crop_sample", r.crop_sheets["sample"], "contact sheet of sampled crops"),
        "<h3>Every crop without its own detection</h3>"
        "<p>Frame colours: green detected, blue second pass, orange from the person's or shoot's "
        "other photos, red fixed fallback region. Check that these still show a face.</p>",
        figs.embed("crop_fallbacks", r.crop_sheets["fallbacks"],
                   "contact sheet of crops without a detection"),
    )


def _folds(r: Run, figs: Figures) -> str:
    folds = r.folds.assign(fold=r.folds["fold"].astype(int), stratum=r.folds["stratum"].astype(int))
    strata = pd.crosstab(folds["fold"], folds["stratum"]).reindex(columns=range(6), fill_value=0)
    strata.columns = STRATUM_NAMES
    images = r.labels.merge(folds[["person", "fold"]], on="person").groupby("fold").size()
    per_fold = strata.assign(persons=strata.sum(axis=1), images=images.reindex(strata.index, fill_value=0))
    return join(
        "<p>All images of a person share one fold; folds are balanced on gender × age group.</p>",
        figs.embed("fold_strata", figures.fold_strata(strata), "persons per fold by stratum"),
        table(per_fold.rename_axis("fold").reset_index()),
    )


def _submission(r: Run, figs: Figures) -> str:
    sub, train = counts(r.submission["ans"]), counts(r.labels["label"])
    sub_p, train_p = sub / max(sub.sum(), 1), train / max(train.sum(), 1)
    shares = pd.DataFrame({"class": range(classes.NUM_CLASSES), "name": classes.class_names(),
                          "training": train_p, "submission": sub_p, "submission n": sub})
    return join(
        f"<p>{len(r.submission):,} predictions. A large gap to the training shares can mean a shift in "
        "the eval data or a systematic error (e.g. mask status mixed up).</p>",
        figs.embed("class_proportions",
                   figures.class_proportions({"training labels": train_p, "submission": sub_p}),
                   "class proportions"),
        "<details><summary>Shares as a table</summary>"
        + table(shares, {"training": pct, "submission": pct}) + "</details>",
    )


#: (anchor, heading, content) of every section, in page order; the navigation bar follows it.
_SECTIONS: tuple[tuple[str, str, Callable[[Run, Figures], str]], ...] = (
    ("summary", "Summary", _summary),
    ("data", "Data", _data),
    ("corrections", "Label corrections", _corrections),
    ("crops", "Face crops", _crops),
    ("folds", "Folds", _folds),
    ("training", "Training", sections.training),
    ("scores", "Scores", sections.scores),
    ("per-class", "Per-class F1", sections.per_class),
    ("confusion", "Confusion matrix", sections.confusion),
    ("eval", "Scored on eval", sections.eval_scores),
    ("mistakes", "Confident mistakes", sections.mistakes),
    ("mislabels", "Suspected mislabels", mislabels.section),
    ("persons", "Eval persons", persons_section),
    ("rounds", "Pseudo-label rounds", rounds.section),
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
.tables{display:flex;flex-wrap:wrap;gap:0 2rem}
.tables p{margin:.6rem 0 0}
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
    nav = "".join(f'<a href="#{anchor}">{esc(heading)}</a>' for anchor, heading, _ in _SECTIONS)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            f"<header><h1>{esc(title)}</h1></header>\n<nav>{nav}</nav>\n<main>\n{body}\n</main>\n"
            f"</body>\n</html>\n")
