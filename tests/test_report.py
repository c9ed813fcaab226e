"""The report step on a tiny synthetic run written in the exact formats of the upstream steps."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score

from maskpipe import classes
from maskpipe.io import MaskpipeError
from maskpipe.report import ReportInputs, build_report
from maskpipe.report import html as report_html
from maskpipe.report.inputs import load

F1_DEFINITION = ("sklearn f1_score(average='macro', labels=0..17, zero_division=0): classes absent "
                 "from both truth and predictions count as 0")
AGES = [19, 25, 45, 60, 33, 58, 27, 60, 52, 22, 41, 60]
MODELS = ("demo", "wide")
K = 3


def _fake_sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _manifest() -> pd.DataFrame:
    rows = []
    for i, age in enumerate(AGES):
        pid, gender = f"{i + 1:06d}", classes.GENDER_NAMES[i % 2]
        person = f"{pid}_{gender}_Asian_{age}"
        for stem in classes.IMAGE_STEMS:
            mask, g, a = classes.MASK_BY_STEM[stem], i % 2, int(classes.age_bin(age))
            rows.append({"key": f"{person}/{stem}", "person": person, "id": pid, "gender": gender,
                         "age": age, "stem": stem, "path": f"train/images/{person}/{stem}.jpg",
                         "mask": mask, "age_group": a, "label": int(classes.encode(mask, g, a)),
                         "sha256": _fake_sha(person + stem)})
    return pd.DataFrame(rows)


def _labels_and_corrections(manifest: pd.DataFrame, with_fixes: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    labels = manifest.copy()
    for col in ("gender", "age", "mask", "label"):
        labels[f"orig_{col}"] = labels[col]
    fixes = pd.DataFrame(columns=["line", "person", "fix", "old", "new", "reason"])
    if with_fixes:
        first, last = labels["person"].iloc[0], labels["person"].iloc[-1]
        rows = labels["person"] == first
        labels.loc[rows, "gender"] = "female"
        labels.loc[rows, "label"] = classes.encode(labels.loc[rows, "mask"], 1, labels.loc[rows, "age_group"])
        labels = labels[labels["person"] != last].reset_index(drop=True)
        fixes = pd.DataFrame([
            {"line": 3, "person": first, "fix": "gender", "old": "male", "new": "female",
             "reason": "long hair <b>and</b> earrings"},
            {"line": 7, "person": last, "fix": "drop_person", "old": "kept", "new": "dropped",
             "reason": "duplicate of 000002"},
        ])
    return labels, fixes


def _crop_index(keys: list[str], rng: np.random.Generator) -> pd.DataFrame:
    fallback = np.arange(len(keys)) % 5 == 4
    return pd.DataFrame({"key": keys, "row": range(len(keys)), "sha256": [_fake_sha(k) for k in keys],
                         "source": np.where(fallback, "fallback", "detected"),
                         "prob": np.where(fallback, np.nan, rng.uniform(0.9, 1.0, len(keys)).round(6)),
                         "x1": 10.0, "y1": 20.0, "x2": 200.0, "y2": 276.0})


def _history(rng: np.random.Generator, epochs: int = 4) -> list[dict]:
    return [{"epoch": e, "train_loss": 2.5 / e + rng.uniform(0, 0.1), "val_loss": 2.2 / e + 0.3,
             "val_f1": 0.3 + 0.12 * e + rng.uniform(0, 0.05), "val_acc": 0.4 + 0.1 * e, "lr": 1e-3,
             "seconds": 12.0, "images_per_second": 80.0} for e in range(1, epochs + 1)]


def _score_row(model: str, fold: object, truth: np.ndarray, pred: np.ndarray) -> dict:
    def f1(t, p, n):
        return f1_score(t, p, labels=range(n), average="macro", zero_division=0)

    (tm, tg, ta), (pm, pg, pa) = classes.decode(truth), classes.decode(pred)
    return {"model": model, "fold": fold, "tta": "hflip", "n": len(truth),
            "macro_f1": f1(truth, pred, classes.NUM_CLASSES), "accuracy": accuracy_score(truth, pred),
            "mask_f1": f1(tm, pm, 3), "gender_f1": f1(tg, pg, 2), "age_f1": f1(ta, pa, 3)}


def write_run(folder: Path, with_fixes: bool = True) -> ReportInputs:
    """Write every input of the report for a 12-person, 2-model, 3-fold run under ``folder``."""
    rng = np.random.default_rng(0)
    manifest = _manifest()
    labels, fixes = _labels_and_corrections(manifest, with_fixes)
    persons = sorted(labels["person"].unique())
    folds = pd.DataFrame({"person": persons, "fold": [i % K for i in range(len(persons))]})
    first = labels.drop_duplicates("person").set_index("person")
    folds["stratum"] = (first.loc[persons, "gender"].map(classes.GENDER_BY_NAME).to_numpy() * 3
                        + first.loc[persons, "age_group"].to_numpy())
    eval_keys = [f"{_fake_sha(str(i))[:12]}.jpg" for i in range(20)]

    truth = labels["label"].to_numpy()
    pred = np.where(rng.uniform(size=len(truth)) < 0.8, truth, rng.integers(0, 18, len(truth)))
    logits = rng.normal(size=(len(truth), classes.NUM_CLASSES))
    logits[np.arange(len(truth)), pred] += 4
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    oof = pd.DataFrame({"key": labels["key"], "person": labels["person"], "label": truth, "pred": pred})
    oof = pd.concat([oof, pd.DataFrame(probs.round(6), columns=[f"p{c:02d}" for c in range(18)])], axis=1)

    fold_of = labels["person"].map(folds.set_index("person")["fold"]).to_numpy()
    scores = [_score_row(m, f, truth[fold_of == f], pred[fold_of == f]) for m in MODELS for f in range(K)]
    scores += [_score_row(m, "all", truth, pred) for m in (*MODELS, "ensemble")]
    per_class = f1_score(truth, pred, labels=range(18), average=None, zero_division=0)
    ens = scores[-1]
    metrics = {"oof_macro_f1": ens["macro_f1"], "oof_accuracy": ens["accuracy"],
               "f1_definition": F1_DEFINITION, "per_class_f1": per_class.tolist(),
               "tasks": {"mask": ens["mask_f1"], "gender": ens["gender_f1"], "age": ens["age_f1"]},
               "models": {m: {"weight": 0.5} for m in MODELS}}

    paths = {name: folder / f"{name}.csv" for name in
             ("train_manifest", "labels", "corrections", "crop_index_train", "crop_index_eval", "folds",
              "scores", "ensemble_oof", "submission")}
    tables = {"train_manifest": manifest, "labels": labels, "corrections": fixes, "folds": folds,
              "crop_index_train": _crop_index(list(manifest["key"]), rng),
              "crop_index_eval": _crop_index(eval_keys, rng), "scores": pd.DataFrame(scores),
              "ensemble_oof": oof,
              "submission": pd.DataFrame({"ImageID": eval_keys, "ans": rng.integers(0, 18, len(eval_keys))})}
    for name, df in tables.items():
        df.to_csv(paths[name], index=False, lineterminator="\n")
    train_metrics = []
    for m in MODELS:
        for f in range(K):
            path = folder / "models" / m / f"fold{f}" / "metrics.json"
            path.parent.mkdir(parents=True)
            history = _history(rng)
            best = max(history, key=lambda h: h["val_f1"])
            path.write_text(json.dumps({"model": m, "fold": f, "arch": "resnet18",
                                        "best_epoch": best["epoch"], "best_val_f1": best["val_f1"],
                                        "n_train": 56, "n_val": 28, "device": "cpu", "history": history}))
            train_metrics.append(path)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    from maskpipe.crop.sheet import contact_sheet

    crops = rng.integers(0, 255, size=(6, 24, 20, 3), dtype=np.uint8)
    sheets = {}
    for name, rows in (("crop_sample", range(6)), ("crop_fallbacks", [1, 4])):
        sheets[name] = folder / f"{name}.png"
        sheets[name].write_bytes(contact_sheet(crops, rows, ["fallback"] * len(rows)))
    return ReportInputs(**paths, **sheets, train_metrics=train_metrics, metrics=folder / "metrics.json")


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[ReportInputs, Path, str]:
    folder = tmp_path_factory.mktemp("run")
    inputs = write_run(folder)
    out = folder / "report" / "report.html"
    build_report(inputs, "maskpipe demo run", out)
    return inputs, out, out.read_text()


def test_report_is_self_contained(report):
    _, _, text = report
    assert 'src="http' not in text and "src='http" not in text
    assert "<link" not in text
    assert not re.search(r"<script[^>]*\bsrc=", text)
    images = re.findall(r'<img [^>]*src="([^"]*)"', text)
    assert len(images) >= 9
    assert all(src.startswith("data:image/png;base64,") for src in images)


def test_report_has_every_section_in_order(report):
    _, _, text = report
    headings = re.findall(r"<h2>(.*?)</h2>", text)
    assert headings == ["Summary", "Data", "Label corrections", "Face crops", "Folds", "Training", "Scores",
                        "Per-class F1", "Confusion matrix", "Submission"]


def test_report_shows_the_key_numbers(report):
    inputs, _, text = report
    metrics = json.loads(inputs.metrics.read_text())
    assert f"{metrics['oof_macro_f1']:.3f}" in text
    assert f"{metrics['oof_accuracy']:.3f}" in text
    assert "zero_division=0" in text  # the F1 definition, from metrics.json
    scores = pd.read_csv(inputs.scores)
    ensemble = f'<td class="num">{scores["macro_f1"].iloc[-1]:.3f}</td>'
    assert re.search(r'<tr class="hl"><td>ensemble</td>.*?' + re.escape(ensemble), text)
    # 11 persons and 77 images after dropping one person; 20 eval images.
    assert ">11<" in text and ">77<" in text and ">20<" in text
    # Corrections are listed and their free text is escaped.
    assert "long hair &lt;b&gt;and&lt;/b&gt; earrings" in text and "<b>and</b>" not in text
    assert "train / incorrect_mask" in text and "eval (all)" in text


def test_rerun_with_same_inputs_leaves_the_file_untouched(report):
    inputs, out, text = report
    before = out.stat().st_mtime_ns
    build_report(inputs, "maskpipe demo run", out)
    assert out.stat().st_mtime_ns == before
    assert out.read_text() == text


def test_no_corrections_says_none_applied(tmp_path):
    # Only this section differs from the full report above; building it alone keeps the test fast.
    inputs = write_run(tmp_path, with_fixes=False)
    section = report_html._corrections(load(inputs))
    assert "none applied" in section and "<table" not in section


def test_missing_column_names_the_file(tmp_path):
    inputs = write_run(tmp_path)
    pd.read_csv(inputs.folds).drop(columns="stratum").to_csv(inputs.folds, index=False)
    with pytest.raises(MaskpipeError, match=r"folds\.csv: missing column\(s\) stratum"):
        build_report(inputs, "broken", tmp_path / "report.html")
    assert not (tmp_path / "report.html").exists()
