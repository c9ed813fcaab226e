"""The report's sections on the models: training curves, scores, TTA, weight search, errors.

Each section takes the loaded :class:`~maskpipe.report.inputs.Run` and the page's
:class:`~maskpipe.report.markup.Figures` and returns its HTML.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix

from maskpipe import classes
from maskpipe.metrics import macro_f1, task_f1
from maskpipe.report import figures
from maskpipe.report.inputs import PROB_COLUMNS, Run
from maskpipe.report.markup import Figures, card, counts, esc, f3, fixed, join, signed, table

#: Thumbnails shown in the mistakes grid (4 rows of 6).
TOP_MISTAKES = 24
_TASK_METRICS = ("mask_f1", "gender_f1", "age_f1")


def training(r: Run, figs: Figures) -> str:
    if not r.train:
        return "<p><i>no training metrics</i></p>"
    runs = sorted(r.train, key=lambda t: (t["model"], int(t["fold"])))
    parts = ["<p>From the TensorBoard logs of the <code>train</code> step (all their scalars are in "
             "<code>report/history.csv</code>). Dashed: training batches (augmented); solid: the "
             "validation fold; star: the epoch whose weights were kept.</p>"]
    for model in dict.fromkeys(t["model"] for t in runs):
        mine = [t for t in runs if t["model"] == model]
        histories = {int(t["fold"]): t["history"] for t in mine}
        best = {int(t["fold"]): int(t["best_epoch"]) for t in mine}
        parts.append(figs.embed(f"learning_curves_{model}", figures.learning_curves(model, histories, best),
                                f"learning curves of {model}"))
    tab = pd.DataFrame([{
        "model": t["model"], "fold": int(t["fold"]), "arch": t.get("arch", ""), "device": t.get("device", ""),
        "epochs": len(h), "best epoch": int(t["best_epoch"]), "best val F1": float(t["best_val_f1"]),
        "n train": t.get("n_train", ""), "n val": t.get("n_val", ""),
        "minutes": h["seconds"].sum() / 60 if "seconds" in h else np.nan,
        "images/s": h["images_per_second"].mean() if "images_per_second" in h else np.nan,
    } for t in runs for h in [t["history"]]])
    return join(*parts, table(tab, {"minutes": fixed(1), "images/s": fixed(0)}))


def _fold_order(fold: str) -> tuple[int, int]:
    return (0, 0) if fold == "all" else (1, int(fold) if str(fold).isdigit() else 0)


def _tta_table(g: pd.DataFrame, settings: list[str]) -> tuple[str, pd.DataFrame]:
    """(metric name, one row per fold: score without TTA, with each setting, and the gain)."""
    # A single-task model has no 18-class macro F1; its own task's F1 is the score it has.
    metric = next((c for c in ("macro_f1", *_TASK_METRICS) if g[c].notna().any()), "macro_f1")
    wide = g.pivot_table(index="fold", columns="tta", values=metric, aggfunc="first", dropna=False)
    wide = wide.reindex(sorted(wide.index, key=_fold_order))
    out = pd.DataFrame({"fold": wide.index, "no TTA": wide["none"].to_numpy()})
    for s in settings:
        out[s] = wide[s].to_numpy()
        out["gain" if len(settings) == 1 else f"gain {s}"] = (wide[s] - wide["none"]).to_numpy()
    return metric.replace("_f1", " F1").replace("macro F1", "macro F1 (18 classes)"), out


def _tta(scores: pd.DataFrame) -> str:
    scored = scores[scores["tta"] != "-"]  # the ensemble and combined task models have no TTA
    values = sorted(set(scored["tta"]))
    if values == ["none"]:
        return "<p>TTA was off (<code>predict.tta</code>): every model was scored without it.</p>"
    if "none" not in values:
        return (f"<p>Only one TTA setting was scored ({esc(', '.join(values))}), so TTA's gain "
                "cannot be shown (this run's predictions have no scores without TTA).</p>")
    tables = []
    for model, g in scored.groupby("model", sort=True):
        settings = sorted(set(g["tta"]) - {"none"})
        if not settings or "none" not in set(g["tta"]):
            tables.append(f'<div><p><b>{esc(model)}</b>: scored with {esc(", ".join(sorted(set(g["tta"]))))} '
                          "only</p></div>")
            continue
        metric, df = _tta_table(g, settings)
        gains = {c: signed for c in df.columns if c.startswith("gain")}
        tables.append(f"<div><p><b>{esc(model)}</b> · out-of-fold {esc(metric)}</p>"
                      f"{table(df, gains, highlight=list(df['fold'] == 'all'))}</div>")
    return join("<p>Each model's out-of-fold score without TTA and with the configured views "
                "(probabilities averaged); <code>all</code> is the whole OOF prediction.</p>",
                f'<div class="tables">{"".join(tables)}</div>')


def _weight_search(metrics: dict) -> str:
    ws = metrics.get("weight_search")
    if not isinstance(ws, dict) or not ws.get("enabled"):
        used = metrics.get("weights") or {}
        shown = ", ".join(f"{esc(k)} {v:g}" for k, v in used.items())
        return ("<p>No weight search was run (<code>ensemble.search_weights</code> is off)"
                + (f"; the members voted with the configured weights: {shown}." if shown else ".") + "</p>")
    fit, hold, equal = ws.get("fit_half_f1"), ws.get("holdout_half_f1"), ws.get("equal_weights_holdout_f1")
    gain = hold - equal if None not in (hold, equal) else None
    cards = [
        card("Fit half macro F1", f3(fit),
             f"{ws.get('fit_persons', '?')} persons the weights were fitted on"),
        card("Held-out half macro F1", f3(hold), f"{ws.get('holdout_persons', '?')} persons not used to fit"),
        card("Equal weights, held-out half", f3(equal), f"search gains {signed(gain)} on the held-out half"),
    ]
    weights = pd.DataFrame({"member": list(ws.get("weights", {})),
                            "weight found": [float(v) for v in ws.get("weights", {}).values()]})
    return join(
        "<p>Member weights were searched on the OOF predictions of half the persons and scored on the "
        "other half; the held-out figure is the honest one, the fit-half one is optimistic.</p>",
        f'<div class="cards">{"".join(cards)}</div>',
        table(weights),
    )


def _halves(fitted: dict) -> str:
    """A choice fitted on half the persons: macro F1 of both halves without and with it."""
    return table(pd.DataFrame({
        "half": ["fit", "held out"],
        "macro F1 without": [fitted["fit_half_f1_without"], fitted["holdout_half_f1_without"]],
        "macro F1 with": [fitted["fit_half_f1_with"], fitted["holdout_half_f1_with"]]}))


def _age_bias(metrics: dict) -> str:
    ab = metrics.get("age_bias")
    if not isinstance(ab, dict) or not ab.get("enabled"):
        return "<p>No age-group bias was fitted (<code>ensemble.age_bias</code> is off).</p>"
    return join(f"<p>A bias of <b>{ab['bias']:+.2f}</b> (log scale) on the &ge;60 age group was fitted "
                "on half the persons' OOF predictions and applied; the held-out half is the honest "
                "figure.</p>", _halves(ab))


def _teacher(metrics: dict) -> str:
    t = metrics.get("teacher")
    if not isinstance(t, dict) or not t.get("enabled"):
        return "<p>No teacher voted (<code>teacher.enabled</code> is off).</p>"
    return join(f"<p>dlib's pretrained age and gender networks voted on gender and age with weight "
                f"<b>{t['weight']:.3f}</b>, fitted on half the persons' OOF predictions (0: it did not "
                f"beat the models there); {t['oof_photos_with_estimate']} of {t['oof_photos']} OOF and "
                f"{t['eval_photos_with_estimate']} of {t['eval_photos']} eval photos had an estimate, "
                "the rest kept the models' prediction. The held-out half is the honest figure.</p>",
                _halves(t))


def scores(r: Run, figs: Figures) -> str:
    df = r.scores.assign(n=r.scores["n"].astype(int))
    # Rows scored without TTA next to a TTA'd twin are compared below, not repeated here.
    with_tta = set(df.loc[~df["tta"].isin(["none", "-"]), "model"])
    main = df[~((df["tta"] == "none") & df["model"].isin(with_tta))]
    return join(
        "<p>Out-of-fold scores per model and fold, with the TTA the test predictions used; "
        "<code>all</code> is a model's whole OOF prediction. The ensemble row is highlighted.</p>",
        table(main, highlight=list(main["model"] == "ensemble")),
        "<h3>Test-time augmentation</h3>", _tta(df),
        "<h3>Ensemble weight search</h3>", _weight_search(r.metrics),
        "<h3>Age-group decision bias</h3>", _age_bias(r.metrics),
        "<h3>Teacher</h3>", _teacher(r.metrics),
    )


def per_class(r: Run, figs: Figures) -> str:
    f1 = np.asarray(r.metrics["per_class_f1"], dtype=float)
    png = figures.per_class_f1(f1, counts(r.oof["label"]), float(r.metrics["oof_macro_f1"]))
    return join("<p>n = true images of the class in the OOF predictions.</p>",
                figs.embed("per_class_f1", png, "per-class F1"))


def confusion(r: Run, figs: Figures) -> str:
    truth, pred = r.oof["label"].to_numpy(), r.oof["pred"].to_numpy()
    cm = confusion_matrix(truth, pred, labels=range(classes.NUM_CLASSES))
    panels = _task_panels(truth, pred)
    return join(
        "<p>Ensemble out-of-fold predictions: rows are the true class, columns the prediction; cells show "
        "counts, colour the share of the true class's row.</p>",
        figs.embed("confusion",
                   figures.confusion(cm, classes.class_names(), "Ensemble OOF confusion (18 classes)"),
                   "confusion matrix"),
        figs.embed("task_confusions", figures.task_confusions(panels), "per-task confusion matrices"),
        _age_recall(classes.decode(truth)[2], classes.decode(pred)[2], "Out-of-fold"),
    )


def _task_panels(truth: np.ndarray, pred: np.ndarray) -> list[tuple[str, np.ndarray, tuple[str, ...]]]:
    """One confusion panel per task, titled with the task's macro F1."""
    f1 = task_f1(truth, pred)
    tasks = zip(classes.TASK_CLASS_NAMES.items(), classes.decode(truth), classes.decode(pred), strict=True)
    return [(f"{task} (F1 {f3(f1[task])})", confusion_matrix(t, p, labels=range(len(names))), names)
            for (task, names), t, p in tasks]


def _age_recall(truth: np.ndarray, pred: np.ndarray, what: str) -> str:
    """Each age group's recall: ">=60" is the group the training set barely shows (every real
    train person in it is exactly 60), so its recall is the age task's weak point."""
    n = np.bincount(truth, minlength=3)
    hit = np.bincount(truth[truth == pred], minlength=3)
    recall = pd.DataFrame({"age group": classes.AGE_NAMES, "true photos": n, "predicted right": hit,
                           "recall": [h / k if k else np.nan for h, k in zip(hit, n, strict=True)]})
    return join(f"<p>{what} recall of each age group (the <code>&gt;=60</code> row is the one "
                "to watch):</p>", table(recall))


def eval_scores(r: Run, figs: Figures) -> str:
    """The submission scored against ``report.eval_truth``, where the truth is known (a generated
    set's demo_truth.csv): what a leaderboard would say, per task, with the age groups' recall."""
    if r.eval_truth is None:
        return ("<p>No eval truth (<code>report.eval_truth: null</code>): the competition's eval "
                "answers are unknown. A generated set's <code>demo_truth.csv</code> scores it here.</p>")
    truth = r.eval_truth.loc[r.submission["ImageID"]].to_numpy()
    pred = r.submission["ans"].to_numpy()
    f1 = macro_f1(truth, pred)
    return join(
        f"<p>The submission against the eval truth: macro F1 <b>{f3(f1)}</b> over "
        f"{len(pred):,} eval photos (out of fold: {f3(r.metrics['oof_macro_f1'])}).</p>",
        figs.embed("eval_task_confusions", figures.task_confusions(_task_panels(truth, pred)),
                   "per-task confusion matrices on eval"),
        _age_recall(classes.decode(truth)[2], classes.decode(pred)[2], "Eval"),
    )


def confident_mistakes(oof: pd.DataFrame, top: int = TOP_MISTAKES) -> pd.DataFrame:
    """The ``top`` wrong out-of-fold predictions the ensemble was surest of, surest first.

    Args:
        oof: the ensemble's OOF table (``key, person, label, pred, p00..p17``).
        top: how many to keep.

    Returns:
        ``key, person, label, pred, p_pred, p_true``; ties on ``p_pred`` in key order.
    """
    wrong = oof[oof["pred"] != oof["label"]]
    probs = wrong[PROB_COLUMNS].to_numpy(dtype=float)
    rows = np.arange(len(wrong))
    out = wrong[["key", "person", "label", "pred"]].assign(
        p_pred=probs[rows, wrong["pred"].to_numpy(dtype=int)],
        p_true=probs[rows, wrong["label"].to_numpy(dtype=int)])
    return out.sort_values(["p_pred", "key"], ascending=[False, True]).head(top).reset_index(drop=True)


def mistakes(r: Run, figs: Figures) -> str:
    wrong = int((r.oof["pred"] != r.oof["label"]).sum())
    if not wrong:
        return "<p>No out-of-fold mistakes: the ensemble predicted every training image's class.</p>"
    top = confident_mistakes(r.oof)
    names = classes.class_names()
    rows = r.crops_train.set_index("key")["row"].astype(int)
    images = [np.asarray(r.crop_images[rows[k]]) for k in top["key"]]
    captions = [f"true {names[t]}\n→ pred {names[p]} (p={pp:.2f})"
                for t, p, pp in zip(top["label"], top["pred"], top["p_pred"], strict=True)]
    listing = pd.DataFrame({"#": range(1, len(top) + 1), "key": top["key"], "person": top["person"],
                            "true": [names[t] for t in top["label"]],
                            "predicted": [names[p] for p in top["pred"]],
                            "p(predicted)": top["p_pred"], "p(true)": top["p_true"]})
    return join(
        f"<p>{wrong:,} of {len(r.oof):,} out-of-fold predictions are wrong. These {len(top)} are the ones "
        "the ensemble was surest of (highest probability of the predicted class): confident mistakes "
        "are often label errors worth a correction in <code>labels.corrections</code>.</p>",
        figs.embed("mistakes", figures.thumbnails(images, captions), "most confident out-of-fold mistakes"),
        table(listing),
    )
