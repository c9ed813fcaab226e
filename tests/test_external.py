"""External labelled faces (config ``external``): checked, cropped, and in training rows only.

The faces here are small drawn images (no photo needed): MTCNN finds no face on them, so each
takes the fixed fallback crop, which is all these tests need from the crop library.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from torch.utils.data import ConcatDataset

from maskpipe.classes import NUM_CLASSES, decode, encode
from maskpipe.config import Config, validate
from maskpipe.dag.dvc import stages
from maskpipe.dag.jobs import argv, jobs, jobs_for, resolve
from maskpipe.dag.table import STEPS
from maskpipe.data.external import NOT_WEAR, parse_age, read_folders, read_labels
from maskpipe.io import MaskpipeError
from maskpipe.layout import Layout
from maskpipe.train.build import build_data, external_split, split_fold
from maskpipe.train.heads import HeadLoss, known_tasks

from conftest import EXTERNAL_FACES as FACES
from conftest import make_project, shrink, snakemake_jobs, write_face_folder


# --- checking labels.csv -----------------------------------------------------------------------------

def test_ages_and_ranges_parse():
    assert [parse_age(t) for t in ("24", "60-69", "50-59", "more than 70", "70+", "0-2", " 3 - 9 ")] == \
        [24, 64, 54, 70, 70, 1, 6]
    assert [parse_age(t) for t in ("", "abc", "69-60", "-3", "130", "24.5")] == [None] * 6


def test_labels_read_with_ranges_and_any_case_gender(tmp_path):
    table = read_labels(write_face_folder(tmp_path / "f"))
    assert table["age"].tolist() == [24, 64, 70, 45, 70, 6]
    assert table["gender"].tolist() == [0, 1, 0, 1, 1, 0]
    assert all(Path(p).is_file() for p in table["path"])


@pytest.mark.parametrize("row, message", [
    (("zz.png", "30", "male"), r"labels\.csv: row 3: file 'zz\.png' not found in "),
    (("b.png", "old", "male"), r"labels\.csv: row 3: age 'old' is not a whole number or a range such as 60-69"),
    (("b.png", "30", "x"), r"labels\.csv: row 3: gender 'x' is not male or female"),
    (("a.png", "30", "male"), r"labels\.csv: row 3: file 'a\.png' is already listed in row 2"),
    (("../a.png", "30", "male"), r"labels\.csv: row 3: path '\.\./a\.png' leaves the data folder"),
])
def test_a_bad_row_is_one_line_naming_file_and_row(tmp_path, row, message):
    folder = write_face_folder(tmp_path / "f", FACES[:2])
    pd.DataFrame([FACES[0], row], columns=["file", "age", "gender"]).to_csv(folder / "labels.csv", index=False)
    with pytest.raises(MaskpipeError, match=message) as err:
        read_labels(folder)
    assert "\n" not in str(err.value) and str(folder / "labels.csv") in str(err.value)


def test_photos_may_sit_in_images_as_utkface_keeps_them(tmp_path):
    folder = write_face_folder(tmp_path / "f" / "images", FACES[:2]).parent
    (folder / "images" / "labels.csv").rename(folder / "labels.csv")
    assert read_labels(folder)["path"].tolist() == [str(folder / "images" / f) for f, _, _ in FACES[:2]]


def test_missing_labels_or_columns(tmp_path):
    with pytest.raises(MaskpipeError, match=r"nowhere/labels\.csv: not found"):
        read_labels(tmp_path / "nowhere")
    folder = write_face_folder(tmp_path / "f")
    (folder / "labels.csv").write_text("file,age\na.png,3\n")
    with pytest.raises(MaskpipeError, match=r"labels\.csv: missing column\(s\) gender"):
        read_labels(folder)


def test_folders_keys_are_unique_across_folders(tmp_path):
    faces = read_folders([write_face_folder(tmp_path / "one"), write_face_folder(tmp_path / "two", FACES[:2])])
    assert len(faces) == 8 and faces["key"].is_unique
    assert faces["key"].iloc[-1] == "external/1/b.png"


# --- the external step in the table ----------------------------------------------------------------

@pytest.fixture
def configs(shipped_config, tmp_path):
    """(config without external faces, config with two folders of them), validated."""
    plain = copy.deepcopy(shipped_config)
    plain["results"] = str(tmp_path / "results")
    plain["crop"]["size"] = [40, 32]
    with_faces = copy.deepcopy(plain)
    with_faces["external"] = {"folders": [str(write_face_folder(tmp_path / "faces1")),
                                          str(write_face_folder(tmp_path / "faces2", FACES[:3]))]}
    return validate(plain), validate(with_faces)


def test_default_config_has_no_external_job_and_train_command_is_unchanged(configs):
    plain, with_faces = configs
    external, train = STEPS["external"], STEPS["train"]
    assert jobs(external, plain) == [] and "external" not in stages(Config(plain), "config.yaml")
    assert not any(a.startswith("--external") for a in argv(train, plain, ["c.yaml"], "demo", 0))
    assert jobs(external, with_faces) == [{}]
    L = Layout(with_faces["results"])
    args = argv(train, with_faces, ["c.yaml"], "demo", 0)
    assert args[args.index("--external-crops") + 1] == L.crops("external")
    assert args[args.index("--external-labels") + 1] == L.file("labels", "external.csv")
    assert "external" in {s.name for s, _ in jobs_for("train", with_faces)}
    dvc = stages(Config(with_faces), "config.yaml")
    assert dvc["external"]["params"] == [{"config.yaml": ["external", "crop", "labels.train_age_bounds"]}]
    assert set(with_faces["external"]["folders"]) <= set(dvc["external"]["deps"])
    assert L.crops("external") in dvc["train"]["deps"]


def test_snakemake_plans_the_external_step_and_train_reads_its_outputs(shipped_config, demo_root, tmp_path):
    """Snakemake's own plan (in-process dry run) with external folders: one external job, and
    every train job reads its crops and labels and passes them in its command."""
    import shlex

    cfg = shrink(shipped_config, demo_root, results="results/tiny")
    cfg["external"] = {"folders": [str(write_face_folder(tmp_path / "faces"))]}
    raw = validate(copy.deepcopy(cfg))
    project = make_project(tmp_path / "project", cfg)
    planned, _ = snakemake_jobs(project)
    L = Layout(raw["results"])
    external = [j for j in planned if j.rule.name == "external"]
    assert len(external) == 1 and list(external[0].input["folders"]) == cfg["external"]["folders"]
    assert shlex.split(external[0].shellcmd) == ["maskpipe", *argv(STEPS["external"], raw, ["config.yaml"])]
    trains = [j for j in planned if j.rule.name == "train"]
    assert len(trains) == 4
    for job in trains:
        assert job.input["external_crops"] == L.crops("external")
        assert job.input["external_labels"] == L.file("labels", "external.csv")
        wc = job.wildcards_dict
        assert shlex.split(job.shellcmd) == ["maskpipe", *argv(STEPS["train"], raw, ["config.yaml"],
                                                              wc["model"], wc["fold"])]


def test_the_engines_train_command_parses_with_and_without_external_faces(configs):
    """The command line every engine runs (the table's argv) parsed as `maskpipe train` parses
    it: without external folders it has no external flags and needs none; with them the job
    gets their files."""
    from maskpipe.cli import _job, build_parser

    for raw in configs:
        args = build_parser().parse_args(argv(STEPS["train"], raw, ["config.yaml"], "demo", 0))
        job = _job(STEPS["train"], args, Config(raw))
        expected = resolve(STEPS["train"], raw, "demo", 0)
        assert job.inputs == expected.inputs and job.outputs == expected.outputs
    assert expected.inputs["external_crops"] == Path(Layout(raw["results"]).crops("external"))
    plain = resolve(STEPS["train"], configs[0], "demo", 0)
    assert plain.inputs["external_crops"] is None and plain.inputs["external_labels"] is None


def test_external_step_crops_every_face_with_the_crop_settings(configs, tmp_path):
    _, raw = configs
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(raw))
    from maskpipe.cli import main as cli_main

    job = resolve(STEPS["external"], raw)
    assert cli_main(argv(STEPS["external"], raw, [str(config_file)])) == 0  # the engines' command
    crops = np.load(job.outputs["external_crops"])
    assert crops.shape == (9, 40, 32, 3) and crops.dtype == np.uint8
    index = pd.read_csv(job.outputs["external_index"])
    assert len(index) == 9 and set(index["source"]) == {"fallback"}  # no face on a flat image
    labels = pd.read_csv(job.outputs["external_labels"])
    assert labels["row"].tolist() == list(range(9))
    mask, gender, age = decode(labels["train_label"].to_numpy())
    assert (mask == NOT_WEAR).all() and gender.tolist() == [0, 1, 0, 1, 1, 0, 0, 1, 0]
    assert age.tolist() == [0, 2, 2, 1, 2, 0, 0, 2, 2]  # 24, 60-69, >70, 45, 70+, 3-9, then again
    # a flat image crops to its own colour: row k is face k of the folders, in order
    assert (crops[1] == crops[1, 0, 0]).all() and (crops[6] == crops[0]).all()


def test_drawn_masks_put_real_faces_in_all_three_states(shipped_config, tmp_path):
    """With `masks: drawn` a real face (UTKFace, skipped where absent) becomes three crops: a
    mask worn, worn wrongly, and none; the two drawn ones differ from the photo below the eyes
    only. A flat image (no landmarks) stays one unmasked crop."""
    from conftest import link_real_faces
    from maskpipe.crop.external import crop_external
    from maskpipe.data.external import read_folders

    real = link_real_faces(tmp_path / "real", {("female", 30, 59): 2, ("male", 60, 90): 1})
    flat = write_face_folder(tmp_path / "flat", FACES[:1])
    faces = read_folders([real, flat])
    crop = {**validate(copy.deepcopy(shipped_config))["crop"], "size": [64, 48]}
    out = tmp_path / "out"
    labels = crop_external(faces, out / "x.npy", out / "x.csv", out / "x_labels.csv", tmp_path / "cache", crop,
                           (30, 60), masks="drawn")
    assert labels["mask"].tolist() == [0, 1, NOT_WEAR] * 3 + [NOT_WEAR]
    assert labels["key"].tolist()[:3] == [f"{faces['key'][0]}#wear", f"{faces['key'][0]}#incorrect",
                                          faces["key"][0]]
    mask, gender, age = decode(labels["train_label"].to_numpy())
    assert (mask == labels["mask"]).all() and gender.tolist() == [1] * 6 + [0] * 4
    assert age.tolist() == [1] * 6 + [2] * 3 + [0]
    crops = np.load(out / "x.npy").astype(int)
    assert crops.shape == (10, 64, 48, 3)
    for face in range(3):
        worn, wrong, bare = crops[3 * face: 3 * face + 3]
        assert np.abs(worn - bare)[40:].mean() > 10 and np.abs(wrong - bare)[40:].mean() > 3
    # the same faces and settings again: byte-identical (the mask draws are seeded per face)
    again = crop_external(faces, out / "y.npy", out / "y.csv", out / "y_labels.csv", tmp_path / "cache", crop,
                          (30, 60), masks="drawn")
    assert again.equals(labels) and (np.load(out / "y.npy") == crops).all()


# --- training rows -----------------------------------------------------------------------------------

def _training_set(folder: Path) -> tuple[Path, Path, Path, Path, Path, Path]:
    """A competition training set of 12 persons x 2 photos in 3 folds and 6 external faces, as
    files: (crops, crop index, labels, folds, external crops, external labels)."""
    rng = np.random.default_rng(0)
    persons = [f"p{i}" for i in range(12)]
    keys = [f"{p}/{s}" for p in persons for s in ("mask1", "normal")]
    labels = pd.DataFrame({"key": keys, "person": [k.split("/")[0] for k in keys],
                           "label": [int(encode(k.endswith("normal") * 2, i % 2, i % 3)) for i, k in enumerate(keys)]})
    labels["train_label"] = labels["label"]
    labels["mask"] = decode(labels["label"].to_numpy())[0]
    paths = [folder / n for n in ("train.npy", "train.csv", "labels.csv", "folds.csv", "ext.npy", "ext.csv")]
    np.save(paths[0], rng.integers(0, 255, (len(keys), 16, 16, 3), dtype=np.uint8))
    pd.DataFrame({"key": keys, "row": range(len(keys))}).to_csv(paths[1], index=False)
    labels.to_csv(paths[2], index=False)
    pd.DataFrame({"person": persons, "fold": [i % 3 for i in range(12)]}).to_csv(paths[3], index=False)
    np.save(paths[4], rng.integers(0, 255, (6, 16, 16, 3), dtype=np.uint8))
    ages = np.array([24, 64, 70, 45, 70, 6])
    gender = np.array([0, 1, 0, 1, 1, 0])
    ext = pd.DataFrame({"key": [f"external/0/{c}.png" for c in "abcdef"], "row": range(6), "folder": "f",
                        "file": [f"{c}.png" for c in "abcdef"], "age": ages, "gender": gender, "mask": NOT_WEAR})
    ext["label"] = ext["train_label"] = encode(NOT_WEAR, gender, np.digitize(ages, (30, 60)))
    ext.to_csv(paths[5], index=False)
    return tuple(paths)


def _model(shipped_config, **kw) -> dict:
    cfg = copy.deepcopy(shipped_config)
    cfg["models"] = {"m": {**cfg["models"]["demo"], "image_size": [16, 16], "batch_size": 4, **kw}}
    return validate(cfg)["models"]["m"]


@pytest.mark.parametrize("fold", [0, 1, 2])
def test_external_faces_join_every_folds_training_rows_never_its_validation(tmp_path, shipped_config, fold):
    crops, index, labels, folds, ext_crops, ext_labels = _training_set(tmp_path)
    model = _model(shipped_config)
    tr, va = split_fold(index, labels, folds, fold, model, "models.m")
    ext = external_split(ext_labels, model, "models.m")
    data = build_data(crops, tr, va, {"mean": (0.5,) * 3, "std": (0.5,) * 3}, model, 0, 0,
                      torch.Generator().manual_seed(0), False, "models.m", [(ext_crops, ext)])
    train_ds, val_ds = data.train.dataset, data.val.dataset
    assert isinstance(train_ds, ConcatDataset)
    fold_rows, external_rows = train_ds.datasets
    assert (fold_rows.npy_path, external_rows.npy_path) == (crops, ext_crops)
    assert external_rows.rows.tolist() == list(range(6)) and len(train_ds) == len(tr) + 6
    # validation (and so the out-of-fold predictions, made on the same rows) holds the fold only
    assert val_ds.npy_path == crops and sorted(val_ds.rows) == sorted(va["row"])
    assert set(va["key"]) == set(pd.read_csv(index)["key"][va["row"]]) and not va["key"].str.startswith("external").any()
    assert data.train_y[len(tr):].tolist() == ext["train_label"].tolist() and not data.partial


def test_a_task_restricted_model_trains_its_tasks_only(tmp_path, shipped_config):
    *_, ext_labels = _training_set(tmp_path)
    # a multitask head told [gender, age]: the mask task is marked unknown on the external rows
    multi = external_split(ext_labels, _model(shipped_config, head="multitask", external_tasks=["gender", "age"]),
                           "models.m")
    target, known = known_tasks(torch.tensor(multi["target"].to_numpy()))
    assert target.tolist() == multi["train_label"].tolist()
    assert known.tolist() == [[False, True, True]] * 6
    # task models: the age model takes them, the mask model does not; an age model of one mask state
    # only for the state they show
    assert len(external_split(ext_labels, _model(shipped_config, head="age", external_tasks=["gender", "age"]), "m")) == 6
    assert len(external_split(ext_labels, _model(shipped_config, head="mask", external_tasks=["gender", "age"]), "m")) == 0
    assert len(external_split(ext_labels, _model(shipped_config, head="age", for_mask="wear"), "m")) == 0  # none drawn
    assert len(external_split(ext_labels, _model(shipped_config, head="age", for_mask="not_wear"), "m")) == 6
    assert len(external_split(ext_labels, _model(shipped_config, external_tasks=[]), "m")) == 0
    assert (external_split(ext_labels, _model(shipped_config), "m")["target"] < NUM_CLASSES).all()
    with pytest.raises(MaskpipeError, match=r"models\.m\.external_tasks: a single 18-class head learns"):
        external_split(ext_labels, _model(shipped_config, external_tasks=["age"]), "models.m")
    with pytest.raises(MaskpipeError, match=r"models\.m\.external_tasks: CutMix/MixUp .* whose mask is unknown"):
        external_split(ext_labels, _model(shipped_config, head="multitask", external_tasks=["age", "gender"],
                                          mixup={"prob": 0.5}), "models.m")


def test_an_unknown_task_adds_no_loss_and_no_gradient():
    """The multitask loss on rows whose mask is unknown: the mask logits get no gradient, the
    others do; a row knowing every task is scored as before."""
    ce = [{"name": "ce", "weight": 1.0, "label_smoothing": 0.0, "class_weights": "none", "gamma": 2.0}]
    weights = {"mask": 1, "gender": 1, "age": 1}
    loss = HeadLoss("multitask", ce, np.ones(NUM_CLASSES), weights, "m", partial=True)
    plain = HeadLoss("multitask", ce, np.ones(NUM_CLASSES), weights, "m")
    logits = torch.randn(4, 8, requires_grad=True)
    labels = torch.tensor([encode(2, 1, 2)] * 4)
    hidden = labels + NUM_CLASSES * 1  # bit 0: the mask task
    loss(logits, hidden).backward()
    grad = logits.grad.clone()
    assert (grad[:, :3] == 0).all() and (grad[:, 3:] != 0).all()
    assert torch.isclose(loss(logits, labels), plain(logits, labels))
    masked_only = loss(logits, labels + NUM_CLASSES * 7)  # every task unknown: nothing to learn
    assert masked_only.item() == 0 and masked_only.requires_grad


def test_maskpipe_train_as_the_engines_run_it_with_and_without_external_faces(tmp_path, shipped_config):
    """`maskpipe train` with the command line the engines build from the table (argv), on the
    files where the table puts them: with external folders it trains on the external faces, with
    none its command and training set are the plain ones."""
    import json
    import shutil

    from maskpipe.cli import main as cli_main

    made = _training_set(tmp_path)
    cfg = copy.deepcopy(shipped_config)
    cfg["results"] = str(tmp_path / "results")
    cfg["folds"]["k"] = 3
    cfg["train"]["num_workers"] = 0
    cfg["models"] = {"m": {**cfg["models"]["demo"], "arch": "test_resnet", "image_size": [32, 32], "epochs": 1,
                           "batch_size": 4, "augment": []}}
    L = Layout(cfg["results"])
    for src, dest in zip(made, [L.crops("train"), L.crop_index("train"), L.labels(), L.folds(),
                                L.crops("external"), L.file("labels", "external.csv")], strict=True):
        Path(dest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dest)
    counts = {}
    for folders in ([], [str(write_face_folder(tmp_path / "faces"))]):
        cfg["external"] = {"folders": folders}
        config_path = tmp_path / "config.yaml"
        config_path.write_text(yaml.safe_dump(cfg))
        args = argv(STEPS["train"], validate(copy.deepcopy(cfg)), [str(config_path)], "m", 0)
        assert ("--external-crops" in args) == bool(folders)
        assert cli_main(args) == 0
        counts[bool(folders)] = json.loads(Path(L.train_metrics("m", 0)).read_text())
    assert counts[False]["n_external"] == 0 and counts[True]["n_external"] == 6
    assert counts[True]["n_train"] == counts[False]["n_train"] + 6 and counts[True]["n_val"] == counts[False]["n_val"]


def test_train_fold_counts_the_external_faces_and_validates_on_the_fold_only(tmp_path, shipped_config):
    """One real epoch of a multitask model taking the external faces for gender and age only:
    the masked loss trains, and the metrics say what it trained and validated on."""
    from maskpipe.train.loop import TrainJob, train_fold

    crops, index, labels, folds, ext_crops, ext_labels = _training_set(tmp_path)
    model = _model(shipped_config, arch="test_resnet", head="multitask", external_tasks=["gender", "age"],
                   image_size=[32, 32], epochs=1, augment=[])
    cfg = {"train": {**validate(copy.deepcopy(shipped_config))["train"], "num_workers": 0}, "models.m": model}
    out = tmp_path / "m"
    metrics = train_fold(TrainJob("m", 1, crops, index, labels, folds, out / "best.pt", out / "metrics.json",
                                  out / "tb", external=(ext_crops, ext_labels)), cfg)
    tr, va = split_fold(index, labels, folds, 1, model, "models.m")
    assert (metrics["n_external"], metrics["n_train"], metrics["n_val"]) == (6, len(tr) + 6, len(va))
    assert np.isfinite(metrics["history"][0]["train_loss"])
