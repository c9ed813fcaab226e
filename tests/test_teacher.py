"""The teacher: dlib's age and gender networks on real photos, its per-photo cache and sharing
within persons, its vote in the ensemble, and how the step is switched on and off."""

import copy
import json
import shutil
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

pytest.importorskip("dlib", reason="the teacher needs dlib-bin (make install)")
pytest.importorskip("cv2")

from conftest import REPO, UTKFACE, make_project, shrink, snakemake_jobs  # noqa: E402
from maskpipe.config import Config, load_raw  # noqa: E402
from maskpipe.dag.dvc import stages  # noqa: E402
from maskpipe.dag.jobs import argv, jobs  # noqa: E402
from maskpipe.dag.table import STEPS  # noqa: E402
from maskpipe.ensemble import teacher as teaching  # noqa: E402
from maskpipe.ensemble.vote import EnsembleConfig, EnsembleJob, ensemble_folds  # noqa: E402
from maskpipe.io import MaskpipeError, sha256_file  # noqa: E402
from maskpipe.teacher import photos  # noqa: E402
from maskpipe.teacher.estimator import Estimator, age_groups  # noqa: E402
from maskpipe.teacher.photos import TeacherSettings, teach_splits  # noqa: E402
from maskpipe.train.predict import PROB_COLUMNS  # noqa: E402

#: A real portrait of Grace Hopper aged 79, shipped with matplotlib.
GRACE = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


@pytest.fixture(scope="module")
def estimator() -> Estimator:
    return Estimator()


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_age_groups_sum_the_ages_at_the_official_bounds():
    ages = np.array([0.25, 1, 29, 30, 59, 60, 80])
    p = np.array([[0.1, 0.1, 0.1, 0.2, 0.2, 0.1, 0.2]])
    assert np.allclose(age_groups(p, ages), [[0.3, 0.4, 0.3]])
    assert np.allclose(age_groups(p, ages, (30, 58)), [[0.3, 0.2, 0.5]])  # 59 is old at 58
    assert np.allclose(age_groups(p, ages, (2, 60)), [[0.2, 0.5, 0.3]])


def test_a_real_old_face_aligns_and_is_estimated_old(estimator):
    """Grace Hopper, 79: aligned and old. Not her gender: dlib's gender network calls this
    portrait (uniform, short hair) male with P 0.99, in the package's own column order, which
    the UTKFace test below confirms on 40 labelled faces."""
    found = estimator.estimate(_rgb(GRACE))
    assert found is not None
    assert found.age[2] > 0.9 and found.mean_age > 65  # she was 79
    assert np.isclose(found.gender.sum(), 1) and np.isclose(found.age.sum(), 1)
    # The same face in a larger photo (the detector on a shrunk copy) says the same.
    big = np.asarray(Image.fromarray(_rgb(GRACE)).resize((1024, 1200)))
    again = estimator.estimate(big)
    assert again is not None and abs(again.mean_age - found.mean_age) < 5
    assert np.argmax(again.gender) == np.argmax(found.gender)


@pytest.mark.skipif(not (UTKFACE / "labels.csv").is_file(),
                    reason="../shared/realfaces/utkface is absent: the real faces are research-only")
def test_gender_of_real_faces_is_mostly_right(estimator):
    """40 UTKFace faces (20 per gender): the gender columns are in the project's order."""
    labels = pd.read_csv(UTKFACE / "labels.csv")
    picked = pd.concat([labels[labels["gender"] == g].iloc[::25].head(20) for g in ("male", "female")])
    right = n = 0
    for row in picked.itertuples():
        face = _rgb(UTKFACE / "images" / row.file)
        canvas = np.full((400, 400, 3), 128, np.uint8)  # the 200x200 crop alone is all face
        canvas[100:300, 100:300] = face
        found = estimator.estimate(canvas)
        if found is not None:
            n += 1
            right += ("male", "female")[int(np.argmax(found.gender))] == row.gender
    assert n >= 30 and right / n >= 0.8


def test_a_photo_without_a_face_is_not_aligned(estimator):
    assert estimator.estimate(np.full((300, 240, 3), 128, np.uint8)) is None
    with pytest.raises(ValueError, match="H x W x 3 uint8"):
        estimator.estimate(np.zeros((10, 10), np.uint8))


def _photos(tmp_path: Path) -> dict[str, Path]:
    """Train: person a (a real face, and a faceless 'masked' photo), person b (faceless only);
    eval the same in groups 0 and 1."""
    root = tmp_path / "data"
    (root / "img").mkdir(parents=True)
    shutil.copy(GRACE, root / "img" / "face.jpg")
    Image.new("RGB", (240, 320), (120, 130, 140)).save(root / "img" / "blank.png")
    Image.new("RGB", (240, 320), (90, 60, 40)).save(root / "img" / "blank2.png")
    rows = [("a/normal", "a", "img/face.jpg", 2), ("a/mask1", "a", "img/blank.png", 0),
            ("b/mask1", "b", "img/blank2.png", 0)]
    train = pd.DataFrame(rows, columns=["key", "person", "path", "mask"])
    train["sha256"] = [sha256_file(root / p) for p in train["path"]]
    evals = train.assign(key=["e0.jpg", "e1.jpg", "e2.jpg"]).drop(columns=["person", "mask"])
    paths = {"train": tmp_path / "train.csv", "eval": tmp_path / "eval.csv", "groups": tmp_path / "groups.csv",
             "root": root, "cache": tmp_path / "cache", "out_train": tmp_path / "t" / "train.csv",
             "out_eval": tmp_path / "t" / "eval.csv"}
    train.to_csv(paths["train"], index=False)
    evals.to_csv(paths["eval"], index=False)
    pd.DataFrame({"key": evals["key"], "group": [0, 0, 1], "size": [2, 2, 1],
                  "confidence": 1.0}).to_csv(paths["groups"], index=False)
    return paths


def teacher_settings(**over) -> TeacherSettings:
    """The shipped config's teacher section, switched on, with ``over``."""
    shipped = yaml.safe_load((REPO / "config.yaml").read_text())["teacher"]
    return TeacherSettings(**{**shipped, "enabled": True, **over})


def _teach(paths: dict[str, Path], settings: TeacherSettings | None = None) -> dict:
    settings = settings or teacher_settings()
    return teach_splits(paths["train"], paths["eval"], paths["groups"], paths["root"], paths["cache"],
                        settings, paths["out_train"], paths["out_eval"])


def test_estimates_are_shared_within_persons_cached_and_counted(tmp_path, monkeypatch, caplog):
    paths = _photos(tmp_path)
    with caplog.at_level("INFO", logger="maskpipe.teacher.photos"):
        counts = _teach(paths)
    assert counts["train"] == {"photos": 3, "aligned": 1, "from_person": 1, "without_estimate": 1}
    assert counts["eval"] == counts["train"]
    assert "1 without an estimate" in caplog.text
    train = pd.read_csv(paths["out_train"])
    assert list(train.columns) == photos.COLUMNS
    assert list(train["source"]) == ["own", "person", "none"]
    assert list(train["aligned"]) == [True, False, False]
    assert train.loc[1, "age2"] == train.loc[0, "age2"] > 0.9  # the masked photo takes the face's
    assert train.loc[2, photos.VALUE_COLUMNS].isna().all()
    first = {s: paths[f"out_{s}"].read_bytes() for s in ("train", "eval")}

    # Second run: every photo is in the cache, so the networks are never loaded.
    def refuse(*args, **kwargs):
        raise AssertionError("the estimator was built although every photo is cached")

    monkeypatch.setattr(photos, "Estimator", refuse)
    for s in ("train", "eval"):
        paths[f"out_{s}"].unlink()
    _teach(paths)
    assert {s: paths[f"out_{s}"].read_bytes() for s in ("train", "eval")} == first
    # Other detector settings are another cache: they estimate again.
    with pytest.raises(AssertionError, match="every photo is cached"):
        _teach(paths, teacher_settings(upsample=1))


def test_without_pooling_each_photo_keeps_its_own_and_no_groups_are_read(tmp_path):
    paths = {**_photos(tmp_path), "groups": None}
    _teach(paths, teacher_settings(pool=False))
    assert list(pd.read_csv(paths["out_eval"])["source"]) == ["own", "none", "none"]
    with pytest.raises(MaskpipeError, match=r"^teacher.pool: .* needs the persons step's groups"):
        _teach(paths)
    on = load_raw([REPO / "config.yaml"])
    on["teacher"].update(enabled=True, pool=False)
    assert "--persons" not in argv(STEPS["teacher"], on, ["config.yaml"])
    on["teacher"]["pool"] = True
    assert "--persons" in argv(STEPS["teacher"], on, ["config.yaml"])


def test_an_eval_photo_without_a_group_is_a_one_line_error(tmp_path):
    paths = _photos(tmp_path)
    pd.read_csv(paths["groups"]).head(2).to_csv(paths["groups"], index=False)
    with pytest.raises(MaskpipeError) as err:
        _teach(paths)
    assert str(err.value) == f"{paths['groups']}: eval photo 'e2.jpg' has no group; rerun the persons step"


# --- the ensemble's vote ---------------------------------------------------------------------

def _pred(keys, fold, probs):
    df = pd.DataFrame({"key": keys, "person": keys, "model": "m", "fold": fold, "tta": "none"})
    return pd.concat([df, pd.DataFrame(probs, columns=PROB_COLUMNS)], axis=1)


def _ensemble_inputs(tmp_path: Path, n: int = 60, seed: int = 0) -> dict:
    """A model that gets mask right and gender/age half right, and a teacher that knows gender
    and age for the photos of two persons in three (the rest have no estimate; eval: e2)."""
    rng = np.random.default_rng(seed)
    persons = np.repeat(np.arange(n // 3), 3)
    mask = rng.integers(0, 3, n)
    gender, age = rng.integers(0, 2, n // 3)[persons], rng.integers(0, 3, n // 3)[persons]
    y = mask * 6 + gender * 3 + age
    probs = rng.dirichlet(np.ones(18), n) * 0.5
    probs[np.arange(n), y] += 0.3 * rng.random(n)
    probs /= probs.sum(1, keepdims=True)
    keys = [f"k{i}" for i in range(n)]
    pd.DataFrame({"key": keys, "person": [f"p{p}" for p in persons], "label": y}).to_csv(
        tmp_path / "labels.csv", index=False)
    oof, test = [], []
    for f in (0, 1):
        rows = np.flatnonzero(persons % 2 == f)
        oof.append(tmp_path / f"oof{f}.csv")
        _pred([keys[r] for r in rows], f, probs[rows]).to_csv(oof[-1], index=False)
        test.append(tmp_path / f"test{f}.csv")
        _pred(["e0", "e1", "e2"], f, probs[:3]).to_csv(test[-1], index=False)
    has = persons % 3 != 2
    female = np.where(gender == 1, 0.9, 0.1)
    table = pd.DataFrame({"key": keys, "aligned": has, "score": 1.0, "source": np.where(has, "own", "none"),
                          "gender0": 1 - female, "gender1": female,
                          **{f"age{g}": np.where(age == g, 0.8, 0.1) for g in range(3)}, "mean_age": 40.0})
    table.loc[~has, photos.VALUE_COLUMNS] = np.nan
    table.to_csv(tmp_path / "teacher_train.csv", index=False)
    table.iloc[[0, 1, 6]].assign(key=["e0", "e1", "e2"]).to_csv(tmp_path / "teacher_eval.csv", index=False)
    return {"oof": oof, "test": test, "labels": tmp_path / "labels.csv", "probs": probs, "has": has, "y": y}


def _run(tmp_path: Path, name: str, inputs: dict, teacher: tuple[Path, Path] | None = None,
         cfg: EnsembleConfig = EnsembleConfig()) -> tuple[dict, dict[str, Path]]:
    out = {n: tmp_path / name / n for n in ("oof.csv", "test.csv", "scores.csv", "metrics.json")}
    job = EnsembleJob(inputs["oof"], inputs["test"], inputs["labels"], *out.values(), None,
                      *(teacher or (None, None)))
    return ensemble_folds(job, cfg), out


def test_the_teacher_votes_with_a_fitted_weight_where_it_has_an_estimate(tmp_path):
    inputs = _ensemble_inputs(tmp_path)
    plain, plain_out = _run(tmp_path, "plain", inputs)
    assert "teacher" not in plain
    taught, out = _run(tmp_path, "taught", inputs,
                       (tmp_path / "teacher_train.csv", tmp_path / "teacher_eval.csv"))
    t = taught["teacher"]
    assert 0 < t["weight"] <= 1 and t["fit_half_f1_with"] > t["fit_half_f1_without"]
    assert t["oof_photos_with_estimate"] == int(inputs["has"].sum()) and t["eval_photos_with_estimate"] == 2
    assert taught["oof_macro_f1"] > plain["oof_macro_f1"]
    oof = pd.read_csv(out["oof.csv"])
    before = pd.read_csv(plain_out["oof.csv"])
    p = oof[PROB_COLUMNS].to_numpy()
    assert np.all(p >= 0) and np.allclose(p.sum(1), 1, atol=1e-5)
    # Photos without an estimate keep the models' prediction, to the digit written.
    has = inputs["has"]
    assert oof[~has].equals(before[~has]) and not oof[has].equals(before[has])
    test, test_before = pd.read_csv(out["test.csv"]), pd.read_csv(plain_out["test.csv"])
    assert test.iloc[2].equals(test_before.iloc[2]) and not test.iloc[:2].equals(test_before.iloc[:2])
    assert json.loads(out["metrics.json"].read_text())["teacher"]["weight"] == t["weight"]


def test_a_teacher_without_estimates_changes_nothing(tmp_path):
    inputs = _ensemble_inputs(tmp_path)
    for name in ("teacher_train.csv", "teacher_eval.csv"):
        table = pd.read_csv(tmp_path / name)
        table.loc[:, photos.VALUE_COLUMNS] = np.nan
        table.to_csv(tmp_path / f"none_{name}", index=False)
    cfg = EnsembleConfig(search_weights=True, age_bias=True)
    plain, plain_out = _run(tmp_path, "plain", inputs, cfg=cfg)
    taught, out = _run(tmp_path, "taught", inputs, (tmp_path / "none_teacher_train.csv",
                                                    tmp_path / "none_teacher_eval.csv"), cfg)
    assert taught.pop("teacher")["oof_photos_with_estimate"] == 0
    assert taught == plain
    for name in ("oof.csv", "test.csv", "scores.csv"):
        assert out[name].read_bytes() == plain_out[name].read_bytes(), name


def test_with_teacher_weight_zero_and_rows_without_estimate_are_the_input():
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(18), 4)
    found = teaching.Estimates(np.array([[0.0, 1.0]] * 4), np.array([[0.0, 0.0, 1.0]] * 4),
                               np.array([True, False, True, False]))
    vote = lambda ps, ww: np.tensordot(ww / ww.sum(), np.stack(ps), axes=1)  # noqa: E731
    assert teaching.with_teacher(p, found, 0.0, vote) is p
    mixed = teaching.with_teacher(p, found, 1.0, vote)
    assert np.array_equal(mixed[[1, 3]], p[[1, 3]])
    # weight 1: the teacher's gender and age, the ensemble's mask
    cube = mixed[[0, 2]].reshape(2, 3, 2, 3)
    assert np.allclose(cube.sum((1, 3)), [[0, 1]] * 2) and np.allclose(cube.sum((1, 2)), [[0, 0, 1]] * 2)
    assert np.allclose(cube.sum((2, 3)), p[[0, 2]].reshape(2, 3, 6).sum(2))


def test_teacher_files_naming_other_photos_are_a_one_line_error(tmp_path):
    inputs = _ensemble_inputs(tmp_path)
    pd.read_csv(tmp_path / "teacher_train.csv").iloc[1:].to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(MaskpipeError) as err:
        _run(tmp_path, "x", inputs, (tmp_path / "short.csv", tmp_path / "teacher_eval.csv"))
    assert str(err.value) == f"{tmp_path / 'short.csv'}: no row for photo 'k0'; rerun the teacher step"
    with pytest.raises(MaskpipeError, match="need both files"):
        _run(tmp_path, "y", inputs, (tmp_path / "teacher_train.csv", None))


# --- the step, switched by teacher.enabled ------------------------------------------------------

def test_teacher_enabled_switches_the_step_and_the_ensembles_inputs():
    off = load_raw([REPO / "config.yaml"])
    on = copy.deepcopy(off)
    on["teacher"]["enabled"] = True
    ensemble = STEPS["ensemble"]
    assert jobs(STEPS["teacher"], off) == [] and jobs(STEPS["teacher"], on) == [{}]
    assert not any("teacher" in a for a in argv(ensemble, off, ["config.yaml"]))
    args = argv(ensemble, on, ["config.yaml"])
    assert args[args.index("--teacher-train") + 1] == f"{on['results']}/teacher/train.csv"
    assert "teacher" not in stages(Config(off), "config.yaml")
    staged = stages(Config(on), "config.yaml")
    assert list(staged).index("teacher") < list(staged).index("ensemble")
    assert f"{on['results']}/teacher/eval.csv" in staged["ensemble"]["deps"]


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.update(upsample=-1), "teacher.upsample: -1 is less than the minimum of 0"),
    (lambda t: t.update(enabeld=True), "unknown key teacher.'enabeld' (did you mean 'enabled'?)"),
    (lambda t: t.update(pool="yes"), "teacher.pool: 'yes' is not of type 'boolean'"),
])
def test_invalid_teacher_config_is_one_line(tmp_path, shipped_config, edit, message):
    import yaml

    cfg = copy.deepcopy(shipped_config)
    edit(cfg.setdefault("teacher", {}))
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(MaskpipeError) as err:
        load_raw(tmp_path / "c.yaml")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_snakemakes_plan_has_the_teacher_only_when_enabled(tmp_path, shipped_config, demo_root):
    plans = {}
    for enabled in (False, True):
        cfg = shrink(shipped_config, demo_root)
        cfg["teacher"] = {"enabled": enabled}
        project = make_project(tmp_path / str(enabled), cfg)
        jobs_, _ = snakemake_jobs(project)
        plans[enabled] = {j.rule.name: j for j in jobs_}
    off, on = plans[False], plans[True]
    assert "teacher" not in off and set(on) == set(off) | {"teacher"}
    assert not any(k.startswith("teacher") for k in off["ensemble"].input.keys())
    assert on["ensemble"].input["teacher_eval"] == on["teacher"].output["eval"]
    assert on["teacher"].output["eval"] == "results/tiny/teacher/eval.csv"
    assert on["teacher"].input["persons"] == on["persons"].output["groups"]


def test_the_steps_run_as_the_engines_run_them_on_the_tiny_run(tiny_run, tmp_path):
    """The teacher job, then the ensemble job with the teacher on, through the runner with the
    files the table gives (the tiny run's inputs, outputs under tmp_path): the demo's generated
    faces align unmasked, masked photos take their person's estimate, and the ensemble's
    metrics say how the teacher voted."""
    import yaml

    from maskpipe.dag.jobs import resolve
    from maskpipe.dag.runner import run_job

    config_path, L = tiny_run
    on = tmp_path / "teacher.yaml"
    on.write_text(yaml.safe_dump({"teacher": {"enabled": True}}))
    raw = load_raw([config_path, on])
    here = str(tmp_path)

    def ours(step):  # this test's files: the step's outputs, the teacher's cache and estimates
        mine = {*step.outputs, *(p for p in step.options if p.name == "cache"),
                *(p for p in step.inputs if p.name.startswith("teacher_"))}
        return lambda port: here if port is None or port in mine else L.results

    teacher = resolve(STEPS["teacher"], raw, root=ours(STEPS["teacher"]))
    run_job(teacher, [config_path, on])
    estimates = pd.read_csv(tmp_path / "teacher" / "train.csv")
    manifest = pd.read_csv(L.manifest("train"))
    assert len(estimates) == len(manifest) and (tmp_path / "cache" / "teacher").is_dir()
    unmasked = estimates[manifest["mask"].to_numpy() == 2]
    assert unmasked["aligned"].mean() > 0.5 and (estimates["source"] == "person").any()
    assert "aligned by mask state" in teacher.log.read_text()

    ensemble = resolve(STEPS["ensemble"], raw, root=ours(STEPS["ensemble"]))
    assert ensemble.inputs["teacher_eval"] == tmp_path / "teacher" / "eval.csv"
    run_job(ensemble, [config_path, on])
    metrics = json.loads((tmp_path / "ensemble" / "metrics.json").read_text())
    assert 0 <= metrics["teacher"]["weight"] <= 1
    assert metrics["teacher"]["oof_photos_with_estimate"] == int((estimates["source"] != "none").sum())
    assert "teacher" not in json.loads(open(L.metrics()).read())
