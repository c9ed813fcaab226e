"""The ``ensemble`` step: soft (or hard) vote over folds and models, scored out of fold."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from maskpipe.io import MaskpipeError, read_csv, write_csv, write_json
from maskpipe.metrics import F1_DEFINITION, macro_f1, per_class_f1, task_f1
from maskpipe.predict import PROB_COLUMNS

log = logging.getLogger(__name__)


def vote(probs: list[np.ndarray], weights: list[float], method: str) -> np.ndarray:
    """Weighted mean of probabilities (soft) or of one-hot argmaxes (hard), renormalised."""
    w = np.asarray(weights, dtype=np.float64)
    if w.sum() <= 0:
        raise MaskpipeError("ensemble.weights: the weights of the models in use sum to 0")
    stack = np.stack(probs).astype(np.float64)
    if method == "hard":
        stack = np.eye(stack.shape[2])[stack.argmax(axis=2)]
    return np.tensordot(w / w.sum(), stack, axes=1)


def _score(y: np.ndarray, p: np.ndarray) -> dict:
    pred = p.argmax(1)
    tasks = task_f1(y, pred)
    return {"n": len(y), "macro_f1": macro_f1(y, pred), "accuracy": float((pred == y).mean()),
            **{f"{k}_f1": v for k, v in tasks.items()}}


def run(oof_paths: list[Path], test_paths: list[Path], labels: Path, method: str,
        weights: dict[str, float], out_oof: Path, out_test: Path, out_scores: Path,
        out_metrics: Path) -> dict:
    """Combine every model × fold prediction; write ensemble OOF, test, scores and metrics."""
    lab = read_csv(labels, required=["key", "label"], dtype={"key": str}).set_index("key")
    oof = pd.concat([read_csv(p, dtype={"key": str}) for p in oof_paths], ignore_index=True)
    test = pd.concat([read_csv(p, dtype={"key": str}) for p in test_paths], ignore_index=True)
    models = sorted(oof["model"].unique())
    rows, model_oof, model_test = [], [], []
    for m in models:
        mo = oof[oof["model"] == m]
        counts = mo["key"].value_counts()
        if (counts > 1).any() or set(mo["key"]) != set(lab.index):
            raise MaskpipeError(f"ensemble: model {m!r} does not predict every labelled image "
                                "exactly once out of fold; are all its folds listed?")
        mo = mo.set_index("key").loc[lab.index]
        y = lab["label"].to_numpy()
        for f, part in mo.groupby("fold"):
            rows.append({"model": m, "fold": str(f), "tta": part["tta"].iloc[0],
                         **_score(lab.loc[part.index, "label"].to_numpy(), part[PROB_COLUMNS].to_numpy())})
        rows.append({"model": m, "fold": "all", "tta": mo["tta"].iloc[0], **_score(y, mo[PROB_COLUMNS].to_numpy())})
        model_oof.append(mo[PROB_COLUMNS].to_numpy())
        mt = test[test["model"] == m].groupby("key", sort=False)[PROB_COLUMNS].mean()
        model_test.append(mt)
    w = [float(weights.get(m, 1.0)) for m in models]
    ens_oof = vote(model_oof, w, method)
    keys = model_test[0].index
    ens_test = vote([mt.loc[keys].to_numpy() for mt in model_test], w, method)
    y = lab["label"].to_numpy()
    score = _score(y, ens_oof)
    rows.append({"model": "ensemble", "fold": "all", "tta": "-", **score})
    scores = pd.DataFrame(rows)
    oof_table = pd.DataFrame({"key": lab.index, "person": lab["person"].to_numpy(), "label": y,
                              "pred": ens_oof.argmax(1)})
    oof_table = pd.concat([oof_table, pd.DataFrame(np.round(ens_oof, 6), columns=PROB_COLUMNS)], axis=1)
    test_table = pd.concat([pd.DataFrame({"key": keys}),
                            pd.DataFrame(np.round(ens_test, 6), columns=PROB_COLUMNS)], axis=1)
    metrics = {
        "oof_macro_f1": score["macro_f1"], "oof_accuracy": score["accuracy"],
        "f1_definition": F1_DEFINITION, "method": method,
        "weights": dict(zip(models, w, strict=True)),
        "per_class_f1": per_class_f1(y, ens_oof.argmax(1)),
        "tasks": {k: score[f"{k}_f1"] for k in ("mask", "gender", "age")},
        "models": {r["model"]: {"oof_macro_f1": r["macro_f1"], "oof_accuracy": r["accuracy"]}
                   for r in rows if r["fold"] == "all" and r["model"] != "ensemble"},
    }
    write_csv(oof_table, out_oof)
    write_csv(test_table, out_test)
    write_csv(scores.round(6), out_scores)
    write_json(metrics, out_metrics)
    log.info("ensemble of %d model(s): out-of-fold macro F1 %.4f, accuracy %.4f",
             len(models), score["macro_f1"], score["accuracy"])
    return metrics
