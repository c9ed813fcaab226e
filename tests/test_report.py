"""The report step on a tiny synthetic run written in the exact formats of the upstream steps."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import html
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score

from maskpipe import classes
from maskpipe.io import MaskpipeError
from maskpipe.mislabels.rank import rank_suspects
from maskpipe.report import ReportInputs, build_report
from maskpipe.report import html as report_html
from maskpipe.report import sections
from maskpipe.report.inputs import history_table, load, read_scalars
from maskpipe.report.markup import Figures

F1_DEFINITION = ("sklearn f1_score(average='macro', labels=0..17, zero_division=0): classes absent "
                 "from both truth and predictions count as 0")
AGES = [19, 25, 45, 60, 33, 58, 27, 60, 52, 22, 41, 60]
MODELS = ("demo", "wide")
K = 3
#: This model x fold gets an empty TensorBoard folder: its curves must come from metrics.json.
NO_EVENTS = ("wide", 2)
WEIGHT_SEARCH = {"enabled": True, "weights": {"demo": 0.7, "wide": 0.3}, "fit_half_f1": 0.9123,
                 "holdout_half_f1": 0.8871, "equal_weights_holdout_f1": 0.8764, "fit_persons": 6,
                 "holdout_persons": 5}
FIGURES = {"class_balance", "age_histogram", "crop_sample", "crop_fallbacks", "fold_strata",
           "learning_curves_demo", "learning_curves_wide", "per_class_f1", "confusion",
           "task_confusions", "mistakes", "mislabels", "class_proportions"}
MISLABELS_F1_BEFORE = 0.4321


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
        aged = labels["person"] == labels["person"].iloc[7 * 2]  # age 45, fixed to 29 by mislabels
        labels.loc[aged, ["age", "age_group"]] = [29, 0]
        labels.loc[aged, "label"] = classes.encode(labels.loc[aged, "mask"], 0, 0)
        labels = labels[labels["person"] != last].reset_index(drop=True)
        fixes = pd.DataFrame([
            {"line": 3, "person": first, "fix": "gender", "old": "male", "new": "female",
             "reason": "long hair <b>and</b> earrings"},
            {"line": 7, "person": last, "fix": "drop_person", "old": "kept", "new": "dropped",
             "reason": "duplicate of 000002"},
            {"line": 11, "person": labels["person"].iloc[7 * 2], "fix": "age", "old": "45", "new": "29",
             "reason": "mislabels: age 30-59 (age 45) -> <30, p=0.91, cleanlab normalized_margin 0.040, "
                       "rank 1; OOF macro F1 0.4321 when ranked"},
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
             "train_f1": 0.35 + 0.13 * e, "val_f1": 0.3 + 0.12 * e + rng.uniform(0, 0.05),
             "val_acc": 0.4 + 0.1 * e, "lr": 1e-3, "frozen_backbone": False, "seconds": 12.0,
             "images_per_second": 80.0, "val_mask_f1": 0.5 + 0.1 * e} for e in range(1, epochs + 1)]


def _tensorboard(folder: Path, history: list[dict]) -> None:
    """Log the history as the train step does: every number (not flags) under its name, step = epoch."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(folder))
    for row in history:
        for name, value in row.items():
            if name != "epoch" and not isinstance(value, bool):
                writer.add_scalar(name, value, row["epoch"])
    writer.close()


def _score_row(model: str, fold: object, truth: np.ndarray, pred: np.ndarray, tta: str = "hflip") -> dict:
    def f1(t, p, n):
        return f1_score(t, p, labels=range(n), average="macro", zero_division=0)

    (tm, tg, ta), (pm, pg, pa) = classes.decode(truth), classes.decode(pred)
    return {"model": model, "fold": fold, "tta": tta, "n": len(truth),
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
    # Without TTA the models are a little worse: a few more images predicted wrong.
    plain = np.where(rng.uniform(size=len(truth)) < 0.1, (pred + 1) % 18, pred)
    scores = []
    for m in MODELS:
        for tta, p in (("hflip", pred), ("none", plain)):
            scores += [_score_row(m, f, truth[fold_of == f], p[fold_of == f], tta) for f in range(K)]
            scores.append(_score_row(m, "all", truth, p, tta))
    scores.append({**_score_row("ensemble", "all", truth, pred), "tta": "-"})
    per_class = f1_score(truth, pred, labels=range(18), average=None, zero_division=0)
    ens = scores[-1]
    metrics = {"oof_macro_f1": ens["macro_f1"], "oof_accuracy": ens["accuracy"],
               "f1_definition": F1_DEFINITION, "per_class_f1": per_class.tolist(),
               "tasks": {"mask": ens["mask_f1"], "gender": ens["gender_f1"], "age": ens["age_f1"]},
               "weights": {m: 1.0 for m in MODELS}, "weight_search": WEIGHT_SEARCH}

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
    train_metrics, tensorboard = [], []
    for m in MODELS:
        for f in range(K):
            path = folder / "models" / m / f"fold{f}" / "metrics.json"
            path.parent.mkdir(parents=True)
            history = _history(rng)
            tensorboard.append(path.parent / "tensorboard")
            tensorboard[-1].mkdir()
            if (m, f) != NO_EVENTS:
                _tensorboard(tensorboard[-1], history)
            best = max(history, key=lambda h: h["val_f1"])
            path.write_text(json.dumps({"model": m, "fold": f, "arch": "resnet18",
                                        "best_epoch": best["epoch"], "best_val_f1": best["val_f1"],
                                        "n_train": 56, "n_val": 28, "device": "cpu", "history": history}))
            train_metrics.append(path)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    table = labels.assign(gender_id=labels["gender"].map(classes.GENDER_BY_NAME))
    suspects = rank_suspects(table, probs.round(6))
    suspects.to_csv(folder / "suspects.csv", index=False, lineterminator="\n")
    (folder / "suspects.json").write_text(json.dumps({"method": "normalized_margin", "suspects": len(suspects),
                                                      "oof_macro_f1": MISLABELS_F1_BEFORE}))
    from maskpipe.crop.sheet import contact_sheet

    crops = rng.integers(0, 255, size=(len(manifest), 24, 20, 3), dtype=np.uint8)
    np.save(folder / "crops_train.npy", crops)
    sheets = {}
    for name, rows in (("crop_sample", range(6)), ("crop_fallbacks", [1, 4])):
        sheets[name] = folder / f"{name}.png"
        sheets[name].write_bytes(contact_sheet(crops, rows, ["fallback"] * len(rows)))
    return ReportInputs(**paths, **sheets, crops_train=folder / "crops_train.npy",
                        mislabels=folder / "suspects.csv", mislabels_summary=folder / "suspects.json",
                        train_metrics=train_metrics, tensorboard=tensorboard, metrics=folder / "metrics.json")


def _build(inputs: ReportInputs, out: Path) -> None:
    build_report(inputs, "maskpipe demo run", out, out.parent / "figures", out.parent / "history.csv")


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[ReportInputs, Path, str]:
    folder = tmp_path_factory.mktemp("run")
    inputs = write_run(folder)
    out = folder / "report" / "report.html"
    _build(inputs, out)
    return inputs, out, out.read_text()


def _section(text: str, anchor: str) -> str:
    return re.search(rf'<section id="{anchor}">(.*?)</section>', text, re.S).group(1)


def test_report_is_self_contained(report):
    _, _, text = report
    assert 'src="http' not in text and "src='http" not in text
    assert "<link" not in text
    assert not re.search(r"<script[^>]*\bsrc=", text)
    images = re.findall(r'<img [^>]*src="([^"]*)"', text)
    assert len(images) == len(FIGURES)
    assert all(src.startswith("data:image/png;base64,") for src in images)


def test_report_has_every_section_in_order(report):
    _, _, text = report
    headings = re.findall(r"<h2>(.*?)</h2>", text)
    assert headings == ["Summary", "Data", "Label corrections", "Face crops", "Folds", "Training", "Scores",
                        "Per-class F1", "Confusion matrix", "Scored on eval", "Confident mistakes", "Suspected mislabels",
                        "Eval persons", "Pseudo-label rounds", "Submission"]


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
    outputs = [out, out.parent / "history.csv", *sorted((out.parent / "figures").iterdir())]
    before = [p.stat().st_mtime_ns for p in outputs]
    _build(inputs, out)
    assert [p.stat().st_mtime_ns for p in outputs] == before
    assert out.read_text() == text


def test_the_page_and_figures_do_not_depend_on_where_or_when_the_run_was_made(report, tmp_path):
    _, out, text = report
    other = tmp_path / "elsewhere" / "report.html"
    _build(write_run(tmp_path), other)  # same data, other folder, new TensorBoard event files
    assert other.read_text() == text
    for png in (out.parent / "figures").iterdir():
        assert (other.parent / "figures" / png.name).read_bytes() == png.read_bytes(), png.name
    assert (other.parent / "history.csv").read_bytes() == (out.parent / "history.csv").read_bytes()


def test_no_corrections_says_none_applied(tmp_path):
    # Only this section differs from the full report above; building it alone keeps the test fast.
    inputs = write_run(tmp_path, with_fixes=False)
    section = report_html._corrections(load(inputs), Figures())
    assert "none applied" in section and "<table" not in section


def test_missing_column_names_the_file(tmp_path):
    inputs = write_run(tmp_path)
    pd.read_csv(inputs.folds).drop(columns="stratum").to_csv(inputs.folds, index=False)
    with pytest.raises(MaskpipeError, match=r"folds\.csv: missing column\(s\) stratum"):
        build_report(inputs, "broken", tmp_path / "report.html")
    assert not (tmp_path / "report.html").exists()


def test_figures_are_written_as_the_embedded_pngs(report):
    _, out, text = report
    folder = out.parent / "figures"
    assert {p.stem for p in folder.iterdir()} == FIGURES
    embedded = set(re.findall(r'src="data:image/png;base64,([^"]*)"', text))
    for png in folder.iterdir():
        data = png.read_bytes()
        assert base64.b64encode(data).decode() in embedded, png.name
        assert b"Software" not in data and b"tIME" not in data  # no tool name, no timestamp


def test_stale_figures_are_removed(tmp_path):
    inputs = write_run(tmp_path)
    out = tmp_path / "report" / "report.html"
    stale = tmp_path / "report" / "figures" / "learning_curves_gone.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    _build(inputs, out)
    assert not stale.exists() and (stale.parent / "learning_curves_demo.png").is_file()


def test_read_scalars_takes_every_tag_and_the_last_value_of_a_step(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    for values in ([1.0, 0.5, 0.25], [2.0, 1.0]):  # a run resumed after epoch 2 logs 1-2 again
        writer = SummaryWriter(str(tmp_path))
        for epoch, v in enumerate(values, start=1):
            writer.add_scalar("train_loss", v, epoch)
            writer.add_scalar("lr", 1e-7, epoch)
        writer.close()
    df = read_scalars(tmp_path)
    assert list(df.columns) == ["epoch", "lr", "train_loss"]
    assert df["epoch"].tolist() == [1, 2, 3]
    assert df["train_loss"].tolist() == [2.0, 1.0, 0.25]
    assert df["lr"].tolist() == [1e-7] * 3  # float32 in the file, its shortest decimal here
    (tmp_path / "empty").mkdir()
    assert read_scalars(tmp_path / "empty").empty
    with pytest.raises(MaskpipeError, match=r"missing: TensorBoard folder not found"):
        read_scalars(tmp_path / "missing")


def test_history_csv_holds_every_tensorboard_scalar(report):
    inputs, out, text = report
    history = pd.read_csv(out.parent / "history.csv")
    assert list(history.columns[:8]) == ["model", "fold", "epoch", "train_loss", "val_loss", "train_f1",
                                         "val_f1", "val_acc"]
    assert {"lr", "seconds", "images_per_second", "val_mask_f1"} <= set(history.columns)
    assert "frozen_backbone" not in history.columns  # a flag, never a TensorBoard scalar
    assert len(history) == len(MODELS) * K * 4
    for path in inputs.train_metrics:
        t = json.loads(path.read_text())
        mine = history[(history["model"] == t["model"]) & (history["fold"] == t["fold"])]
        expected = pd.DataFrame(t["history"])
        # TensorBoard stores float32; the fallback run (no events) keeps metrics.json's float64.
        assert np.allclose(mine["val_f1"], expected["val_f1"], rtol=1e-6, atol=0)
    section = _section(text, "training")
    assert section.count('alt="learning curves of') == len(MODELS)


def test_an_empty_event_folder_falls_back_to_metrics_json_with_a_warning(report):
    inputs, _, text = report
    m, f = NO_EVENTS
    assert (f'class="warn">⚠ {m} fold {f}: no scalars in its TensorBoard log; '
            "learning curves from the history in metrics.json.") in text
    run = load(inputs)
    assert history_table(run.train)["epoch"].notna().all()


def test_tensorboard_folders_must_match_the_metrics_files(tmp_path):
    inputs = write_run(tmp_path)
    broken = dataclasses.replace(inputs, tensorboard=inputs.tensorboard[:-1])
    with pytest.raises(MaskpipeError, match=r"6 training metrics file\(s\) but 5 TensorBoard folder\(s\)"):
        load(broken)


def test_confident_mistakes_are_the_surest_wrong_predictions():
    probs = np.full((30, 18), 0.01)
    label = np.zeros(30, dtype=int)
    pred = np.where(np.arange(30) < 26, 1, 0)  # 26 wrong, 4 right
    probs[np.arange(30), pred] = np.linspace(0.3, 0.99, 30)
    oof = pd.DataFrame({"key": [f"k{i:02d}" for i in range(30)], "person": "p", "label": label, "pred": pred})
    oof = pd.concat([oof, pd.DataFrame(probs, columns=[f"p{c:02d}" for c in range(18)])], axis=1)
    top = sections.confident_mistakes(oof)
    assert len(top) == 24 and (top["pred"] != top["label"]).all()
    assert top["p_pred"].is_monotonic_decreasing and top["key"].iloc[0] == "k25"
    assert top["p_true"].eq(0.01).all()


def test_mistakes_section_shows_thumbnails_and_their_table(report):
    inputs, _, text = report
    oof = pd.read_csv(inputs.ensemble_oof, dtype={"key": str})
    wrong = oof[oof["pred"] != oof["label"]]
    section = _section(text, "mistakes")
    assert f"{len(wrong)} of {len(oof)} out-of-fold predictions are wrong" in section
    assert 'alt="most confident out-of-fold mistakes"' in section
    keys = re.findall(r"<tr><td[^>]*>\d+</td><td>([^<]*)</td>", section)
    top = sections.confident_mistakes(oof)
    assert keys == list(top["key"]) and len(keys) == min(24, len(wrong))
    names = classes.class_names()
    first = top.iloc[0]
    assert html.escape(names[first["label"]]) in section and f"{first['p_pred']:.3f}" in section


def test_no_mistakes_says_so(tmp_path):
    run = load(write_run(tmp_path))
    run.oof["pred"] = run.oof["label"]
    assert "No out-of-fold mistakes" in sections.mistakes(run, Figures())


def test_tta_gain_per_model(report):
    inputs, _, text = report
    scores = pd.read_csv(inputs.scores, dtype={"fold": str})
    section = _section(text, "scores")
    for m in MODELS:
        rows = scores[(scores["model"] == m) & (scores["fold"] == "all")].set_index("tta")["macro_f1"]
        gain = rows["hflip"] - rows["none"]
        assert re.search(rf"<b>{m}</b> · out-of-fold macro F1.*?<tr class=\"hl\"><td>all</td>"
                         rf'<td class="num">{rows["none"]:.3f}</td><td class="num">{rows["hflip"]:.3f}</td>'
                         rf'<td class="num">{re.escape(f"{gain:+.3f}")}</td>', section, re.S), m
    # The main table lists the TTA'd scores only; the no-TTA ones are in the comparison.
    main = section.split("<h3>")[0]
    assert "<td>none</td>" not in main and "<td>hflip</td>" in main


def test_tta_off_says_so(tmp_path):
    run = load(write_run(tmp_path))
    run.scores = run.scores[run.scores["tta"] != "hflip"]
    assert "TTA was off" in sections.scores(run, Figures())


def test_weight_search_is_shown(report):
    _, _, text = report
    section = _section(text, "scores")
    assert "Ensemble weight search" in section
    for value in ("0.912", "0.887", "0.876", "+0.011", "0.700", "0.300", "6 persons", "5 persons"):
        assert value in section, value


@pytest.mark.parametrize("search", [None, {"enabled": False}])
def test_no_weight_search_says_so(tmp_path, search):
    run = load(write_run(tmp_path))
    run.metrics.pop("weight_search")
    if search is not None:
        run.metrics["weight_search"] = search
    section = sections.scores(run, Figures())
    assert "No weight search was run" in section and "demo 1, wide 1" in section


def test_tiny_run_report_has_figures_and_history(tiny_run):
    config_path, L = tiny_run
    figures = {p.name for p in Path(L.report_figures()).iterdir()}
    assert {"learning_curves_a.png", "learning_curves_b.png", "confusion.png", "mistakes.png"} <= figures
    history = pd.read_csv(L.report_history())
    assert {"train_loss", "val_loss", "train_f1", "val_f1", "lr", "val_mask_f1"} <= set(history.columns)
    assert sorted(set(zip(history["model"], history["fold"], strict=True))) == [("a", 0), ("a", 1),
                                                                              ("b", 0), ("b", 1)]
    text = Path(L.report()).read_text()
    assert "TensorBoard log;" not in text
    # The real ensemble scores each model with and without the shipped TTA; no search by default.
    assert "<b>a</b> · out-of-fold macro F1" in text and "No weight search was run" in text


def test_mislabels_section_shows_top_suspects_and_the_f1_change(report):
    inputs, _, text = report
    section = _section(text, "mislabels")
    suspects = pd.read_csv(inputs.mislabels)
    assert len(suspects) > 0  # the synthetic predictions disagree with some labels
    assert f"{len(suspects)} label(s)" in section and "normalized_margin" in section
    assert section.count('<img alt="top suspected mislabels"') == 1
    for suspect in suspects["suspect"].head(3):
        assert html.escape(suspect) in section
    # One applied fix came from mislabels, ranked at F1 0.4321; the run now scores metrics.json's F1.
    now = json.loads(inputs.metrics.read_text())["oof_macro_f1"]
    assert "Fixes accepted from mislabels" in section and "0.432" in section
    assert f"change {now - MISLABELS_F1_BEFORE:+.3f}" in section


def test_mislabels_section_without_accepted_fixes(tmp_path):
    inputs = write_run(tmp_path, with_fixes=False)
    section = report_html.mislabels.section(load(inputs), Figures())
    assert "No fix from <code>maskpipe mislabels --accept</code>" in section


def test_crop_section_says_how_each_split_was_cropped():
    """One small table per split: photos and share of each crop source, and the share with a box
    found on the photo's own face or its person's or shoot's."""
    from maskpipe.report.html import CROP_SOURCES, _split_sources

    df = pd.DataFrame({"source": ["detected"] * 5 + ["second_pass", "shoot", "shoot", "fallback", "detected"]})
    page = _split_sources("eval", df)
    assert "eval: 10 photos, 90.0% with a box found" in page
    for source in CROP_SOURCES:
        assert f"<td>{source}</td>" in page
    assert page.index("<td>detected</td>") < page.index(">6<") < page.index("<td>second_pass</td>")
    assert ">60.0%<" in page and ">20.0%<" in page


def test_teacher_vote_is_shown_and_its_absence_said(tmp_path):
    run = load(write_run(tmp_path))
    assert "No teacher voted" in sections.scores(run, Figures())
    run.metrics["teacher"] = {"enabled": True, "weight": 0.25, "fit_half_f1_without": 0.5,
                              "fit_half_f1_with": 0.6, "holdout_half_f1_without": 0.55,
                              "holdout_half_f1_with": 0.58, "oof_photos_with_estimate": 70,
                              "oof_photos": 84, "eval_photos_with_estimate": 9, "eval_photos": 12}
    section = sections.scores(run, Figures())
    for value in ("<b>0.250</b>", "70 of 84 OOF", "9 of 12 eval", "0.550", "0.580"):
        assert value in section, value


def test_age_recall_per_group_is_under_the_confusions(tmp_path):
    run = load(write_run(tmp_path))
    # four true ">=60" photos (classes 2, 5, 8, 17), two predicted ">=60"; one "<30" right
    run.oof = pd.DataFrame({"label": [2, 5, 8, 17, 0], "pred": [2, 4, 6, 17, 0]})
    section = sections.confusion(run, Figures())
    rows = re.findall(r"<tr><td>(.*?)</td><td class=\"num\">(\d+)</td><td class=\"num\">(\d+)</td>"
                      r"<td class=\"num\">(.*?)</td></tr>", section)
    assert rows == [("&lt;30", "1", "1", "1.000"), ("30-59", "0", "0", "–"), ("&gt;=60", "4", "2", "0.500")]


def _with_truth(tmp_path: Path, flip: int) -> tuple[ReportInputs, pd.DataFrame]:
    """A run whose eval truth is its submission with the first ``flip`` answers moved to the
    ">=60" class of the same mask and gender (the age the models miss)."""
    inputs = write_run(tmp_path)
    sub = pd.read_csv(inputs.submission, dtype={"ImageID": str})
    truth = sub.copy()
    mask, gender, _ = classes.decode(truth["ans"].to_numpy()[:flip])
    truth.loc[: flip - 1, "ans"] = classes.encode(mask, gender, 2)
    truth = truth.iloc[::-1]  # any order: matched by ImageID
    truth.to_csv(tmp_path / "truth.csv", index=False)
    return dataclasses.replace(inputs, eval_truth=tmp_path / "truth.csv"), truth.set_index("ImageID")


def test_eval_truth_scores_the_submission_per_task_and_age_group(tmp_path):
    inputs, truth = _with_truth(tmp_path, flip=3)
    run = load(inputs)
    sub = run.submission
    y, p = truth.loc[sub["ImageID"], "ans"].to_numpy(), sub["ans"].to_numpy()
    section = sections.eval_scores(run, Figures())
    assert f"macro F1 <b>{f1_score(y, p, labels=range(18), average='macro', zero_division=0):.3f}</b>" in section
    assert section.count("<img") == 1  # the per-task confusions on eval
    rows = dict((name, (int(n), int(hit))) for name, n, hit in re.findall(
        r"<tr><td>(.*?)</td><td class=\"num\">(\d+)</td><td class=\"num\">(\d+)</td>", section))
    old = classes.decode(y)[2] == 2
    assert rows["&gt;=60"] == (int(old.sum()), int((classes.decode(p)[2][old] == 2).sum()))
    assert "Eval recall of each age group" in section
    (tmp_path / "none").mkdir()
    without = load(write_run(tmp_path / "none"))
    assert "No eval truth" in sections.eval_scores(without, Figures())


def test_eval_truth_must_cover_the_submission_and_hold_classes(tmp_path):
    inputs, truth = _with_truth(tmp_path, flip=1)
    truth.iloc[1:].reset_index().to_csv(inputs.eval_truth, index=False)
    with pytest.raises(MaskpipeError, match=r"truth\.csv: no row for eval photo .* \(1 missing\)"):
        load(inputs)
    bad = truth.reset_index()
    bad.loc[2, "ans"] = 18
    bad.to_csv(inputs.eval_truth, index=False)
    with pytest.raises(MaskpipeError, match=r"truth\.csv: line 4: ans 18 is not a class 0\.\.17"):
        load(inputs)
