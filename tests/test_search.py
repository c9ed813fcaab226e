"""`maskpipe search` (maskpipe.search): the space, trials through the train and predict steps,
the trial cache, resuming a stopped search, and its outputs (trials.csv, best.yaml)."""

from __future__ import annotations

import copy
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml

from maskpipe.cli import main as cli_main
from maskpipe.config import load_raw
from maskpipe.io import MaskpipeError
from maskpipe.search import space as sp
from maskpipe.search.study import MAX_RETRY, recover

#: A tiny search: 3 trials on fold 0 of the tiny run, 1 epoch at 32 px (the tiny models').
SEARCH = {"model": None, "trials": 3, "folds": [0], "seed": 0, "parallel": 1,
          "space": {"lr": {"low": 1.0e-4, "high": 1.0e-2, "log": True},
                    "optimizer": ["adamw", "sgd"],
                    "loss": {"ce": [{"name": "ce"}], "ce_f1": [{"name": "ce", "weight": 0.5},
                                                               {"name": "f1", "weight": 0.5}]},
                    "augment_strength": {"low": 0.0, "high": 1.0},
                    "image_size": [32], "epochs": [1]}}


def search_file(tmp_path, **space) -> str:
    """A config file that replaces the search section (`replace: [search]`); ``space`` entries
    replace SEARCH's."""
    cfg = copy.deepcopy(SEARCH)
    cfg["space"].update(space)
    path = tmp_path / "search.yaml"
    # the weights name model b, which a trial's config (model a alone) drops: trials still run
    path.write_text(yaml.safe_dump({"replace": ["search"], "search": cfg,
                                    "ensemble": {"weights": {"b": 2.0}}}, sort_keys=False))
    return str(path)


def search(config_path, extra: str, out, log, *args: str) -> int:
    return cli_main(["search", "--config", str(config_path), extra, "--out", str(out),
                     "--log", str(log), *args])


def checkpoints(folder) -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for p in folder.rglob("checkpoint.pt")}


def test_space_maps_onto_the_model_config(shipped_config):
    base = load_raw_model(shipped_config)
    dims = sp.parse_space(SEARCH["space"])
    assert [d.name for d in dims] == ["lr", "optimizer", "loss", "augment_strength", "image_size", "epochs"]
    params = {"lr": 0.005, "optimizer": "sgd", "loss": "ce_f1", "augment_strength": 0.5,
              "image_size": "32x32", "epochs": 1}
    cfg = sp.apply(base, params, SEARCH["space"])
    assert cfg["optimizer"] == {**base["optimizer"], "name": "sgd", "lr": 0.005}
    assert cfg["loss"] == SEARCH["space"]["loss"]["ce_f1"]
    assert cfg["image_size"] == [32, 32] and cfg["epochs"] == 1
    # every augment p halved; the scheduler and the rest untouched
    assert [t["p"] for t in cfg["augment"]] == [t["p"] / 2 for t in base["augment"]]
    assert cfg["scheduler"] == base["scheduler"] and base["optimizer"]["name"] == "adamw"
    assert sp.scale_augment([{"name": "HorizontalFlip"}], 3.0) == [{"name": "HorizontalFlip", "p": 1.0}]


def load_raw_model(shipped_config) -> dict:
    return copy.deepcopy(shipped_config["models"]["demo"])


@pytest.mark.parametrize("space, message", [
    ({"optimizer": ["adamw", "lamb"]}, "search.space.optimizer: unknown optimizer 'lamb'"),
    ({"scheduler": ["cosine", "warm"]}, "search.space.scheduler: unknown scheduler 'warm'"),
    ({"lr": {"low": 0.1, "high": 0.01}}, "search.space.lr: low (0.1) must be below high"),
    ({"weight_decay": {"low": 0.0, "high": 0.1, "log": True}}, "search.space.weight_decay: log: true needs low > 0"),
    ({"epochs": [1.5]}, "search.space.epochs: expected whole numbers"),
    ({}, "search.space: nothing to search"),
])
def test_bad_space_is_one_line_naming_the_key(space, message):
    with pytest.raises(MaskpipeError) as err:
        sp.parse_space(space)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_unknown_optimizer_fails_the_command_with_one_line(tiny_run, tmp_path, capsys):
    config_path, _ = tiny_run
    extra = search_file(tmp_path, optimizer=["adamw", "lamb"])
    assert search(config_path, extra, tmp_path / "s", tmp_path / "log") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "search.space.optimizer" in err[0] and "'lamb'" in err[0]
    assert not (tmp_path / "s" / "study.db").exists()


def test_a_loss_mix_the_schema_refuses_is_named(tiny_run, tmp_path, capsys):
    config_path, _ = tiny_run
    extra = search_file(tmp_path, loss={"bad": [{"name": "ce", "label_smoothing": 0.9}]})
    assert search(config_path, extra, tmp_path / "s", tmp_path / "log") == 1
    err = capsys.readouterr().err.strip()
    assert "search.space.loss = 'bad'" in err and "label_smoothing" in err and "\n" not in err


@pytest.fixture(scope="module")
def searched(tiny_run, tmp_path_factory):
    """A search stopped (Ctrl-C) right after its first trial's first epoch, then run again to
    the end: (config file, search file, search folder, folder of the two runs' logs)."""
    from maskpipe.train.resume import ResumeState

    config_path, _ = tiny_run
    work = tmp_path_factory.mktemp("search")
    extra, out = search_file(work), work / "search"
    save = ResumeState.save
    with pytest.MonkeyPatch.context() as mp:
        def save_then_stop(self, *args, **kwargs):
            save(self, *args, **kwargs)
            mp.setattr(ResumeState, "save", save)
            raise KeyboardInterrupt("stopped")

        mp.setattr(ResumeState, "save", save_then_stop)
        assert search(config_path, extra, out, work / "1.log") == 130
    assert len(list(out.rglob("resume.pt"))) == 1
    assert search(config_path, extra, out, work / "2.log") == 0
    return config_path, extra, out, work


def test_a_stopped_search_continues_and_resumes_the_stopped_trial(searched):
    """The stopped trial is failed, enqueued again by the next search with the same params, and
    its training resumes from resume.pt; the study ends with 3 completed trials."""
    _, _, out, work = searched
    table = pd.read_csv(out / "trials.csv")
    assert sorted(table["state"]) == ["COMPLETE"] * 3 + ["FAIL"]
    assert table.loc[table["state"] == "FAIL", "number"].tolist() == [0]
    retry = table[table["retry_of"] == 0]
    assert len(retry) == 1 and retry["state"].item() == "COMPLETE"
    assert "resuming after epoch 1" in (work / "2.log").read_text()
    assert not list(out.rglob("resume.pt"))


def test_trials_are_sorted_and_the_best_is_a_recipe_that_runs_alone(searched):
    config_path, extra, out, _ = searched
    table = pd.read_csv(out / "trials.csv")
    done = table[table["state"] == "COMPLETE"]
    # also over the search's own files, whose ensemble weights name model b
    assert list(load_raw([config_path, extra, out / "best.yaml"])["models"]) == ["a"]
    assert table["score"].dropna().is_monotonic_decreasing and done["score"].between(0, 1).all()
    assert table["state"].iloc[-1] == "FAIL"  # unscored trials last
    assert {p.name for p in (out / "trials").iterdir()} == set(done["trial"])
    # best.yaml validates over the base config, alone, and holds the best trial's values
    raw = load_raw([config_path, out / "best.yaml"])
    best = table.iloc[0]
    assert list(raw["models"]) == ["a"]
    model = raw["models"]["a"]
    assert model["optimizer"]["name"] == best["optimizer"]
    assert model["optimizer"]["lr"] == pytest.approx(best["lr"])
    mix = SEARCH["space"]["loss"][best["loss"]]
    assert [(t["name"], t["weight"]) for t in model["loss"]] == [(t["name"], t.get("weight", 1.0)) for t in mix]
    base = load_raw(config_path)["models"]["a"]
    assert [t["p"] for t in model["augment"]] == [round(t["p"] * best["augment_strength"], 6)
                                                  for t in base["augment"]]
    assert model["epochs"] == 1 and model["image_size"] == [32, 32]
    assert f"trial {best['number']}, out-of-fold macro F1" in (out / "best.yaml").read_text()
    assert "<table>" in (out / "report.html").read_text()
    log = (searched[3] / "2.log").read_text()
    assert (out / "importance.png").is_file() or "importance plot skipped" in log


def test_a_rerun_trains_nothing_and_trials_are_cached_by_config(searched, tmp_path):
    config_path, extra, out, _ = searched
    before = checkpoints(out / "trials")
    assert len(before) == 3
    assert search(config_path, extra, out, tmp_path / "3.log") == 0
    assert checkpoints(out / "trials") == before
    assert "3 of 3 trials completed" in (tmp_path / "3.log").read_text()
    # the study lost: a new one's first trial draws the first run's first params again (same
    # seed), the trial that was stopped and finished by its retry: read from the trial cache
    (out / "study.db").unlink()
    recipe = tmp_path / "6_searched.yaml"
    assert search(config_path, extra, out, tmp_path / "4.log", "--trials", "1",
                  "--write-recipe", str(recipe)) == 0
    assert checkpoints(out / "trials") == before
    log = (tmp_path / "4.log").read_text()
    assert log.count("nothing trained") == 1
    assert "importance plot skipped: 1 completed trial(s)" in log
    assert recipe.read_text() == (out / "best.yaml").read_text()


def test_a_trial_left_running_by_a_kill_is_failed_and_enqueued_again(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=storage, study_name="s", direction="maximize")
    killed = study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)})
    assert killed.params["lr"] > 0  # a trial a killed process never told
    study = optuna.load_study(storage=storage, study_name="s")
    assert recover(study) == 1
    assert recover(study) == 0  # once per retry series
    states = [t.state.name for t in study.trials]
    assert states == ["FAIL", "WAITING"]
    retry = study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)})
    assert retry.number == 1 and retry.params == study.trials[0].params
    assert retry.user_attrs["retry_of"] == 0
    # killed again and again: each retry is retried, MAX_RETRY times in a row at most
    for n in range(1, MAX_RETRY + 1):
        assert recover(study) == (1 if n < MAX_RETRY else 0)
        if n < MAX_RETRY:
            study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)})
    assert [t.state.name for t in study.trials] == ["FAIL"] * (MAX_RETRY + 1)
    assert [t.user_attrs.get("retry_of") for t in study.trials] == [None, *range(MAX_RETRY)]


@pytest.mark.parametrize("search_cfg, message", [
    ({"model": "nope"}, "search.model: no model 'nope' under models (known: demo)"),
    ({"folds": [0, 3]}, "search.folds: fold 3 is not below folds.k (3)"),
    ({"parallel": 0}, "search.parallel: 0 is less than the minimum of 1"),
    ({"space": {"lr": {"low": 0.1}}}, "search.space.lr"),
])
def test_search_section_errors_name_the_key(tmp_path, shipped_config, search_cfg, message):
    from maskpipe.config import Config

    cfg = copy.deepcopy(shipped_config)
    cfg["search"].update(search_cfg)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(MaskpipeError) as err:
        Config.load(path).search
    assert message in str(err.value) and "\n" not in str(err.value)


def test_shipped_search_section_maps_onto_the_demo_model():
    from conftest import REPO
    from maskpipe.config import Config
    from maskpipe.search.space import extremes
    from maskpipe.search.trial import model_config

    cfg = Config.load(REPO / "config.yaml")
    sc = cfg.search
    assert sc.model == "demo" and sc.folds == (0,) and sc.parallel == 1
    dims = sp.parse_space(sc.space)
    assert {d.name for d in dims} == set(sp.KEYS)  # the shipped config declares every entry
    for params in extremes(dims):  # each choice and range end makes a valid model config
        model = model_config(cfg.raw, "demo", sp.apply(cfg.model("demo"), params, sc.space))
        assert model["arch"] == "resnet10t"


def _study_with(values: list[float], lrs: list[float]):
    study = optuna.create_study(direction="maximize")
    dist = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True),
            "optimizer": optuna.distributions.CategoricalDistribution(["adamw", "sgd"])}
    for i, (v, lr) in enumerate(zip(values, lrs, strict=True)):
        study.add_trial(optuna.create_trial(params={"lr": lr, "optimizer": "adamw"},
                                            distributions=dist, value=v, user_attrs={"trial": str(i)}))
    return study


def test_importance_plot_is_drawn_or_skipped_saying_why(caplog):
    from maskpipe.search.results import importance_png, trials_table

    study = _study_with([0.2, 0.5, 0.3, 0.4], [1e-4, 1e-3, 3e-4, 5e-3])
    png = importance_png(study, seed=0)
    assert png is not None and png.startswith(b"\x89PNG")
    assert list(trials_table(study)["score"]) == [0.5, 0.4, 0.3, 0.2]
    caplog.set_level("INFO")
    assert importance_png(_study_with([0.2], [1e-3]), seed=0) is None
    assert importance_png(_study_with([0.2, 0.3], [1e-3, 1e-3]), seed=0) is None
    assert "1 completed trial(s)" in caplog.text and "no parameter took two values" in caplog.text


def test_a_trial_predicts_with_its_own_checkpoint(tiny_run, tmp_path):
    """predict's per-job input (the checkpoint) is the trial's; the shared inputs are the pipeline's."""
    from maskpipe.layout import Layout
    from maskpipe.dag.table import STEPS
    from maskpipe.search.trial import trial_job

    config_path, L = tiny_run
    raw = load_raw(config_path)
    trial = tmp_path / "trial"
    job = trial_job(STEPS["predict"], raw, {**raw, "results": str(trial)}, "a", 0)
    assert str(job.inputs["checkpoint"]) == Layout(str(trial)).checkpoint("a", 0)
    assert str(job.outputs["oof"]) == Layout(str(trial)).oof("a", 0)
    assert str(job.inputs["labels"]) == L.labels() and str(job.inputs["train_crops"]) == L.crops("train")
    assert str(job.log) == Layout(str(trial)).log("predict", "a", "0")


def test_the_trial_key_follows_the_crops_pixels_hashed_once_per_search(tmp_path, shipped_config):
    """A re-crop that keeps the crop index byte-identical names new trials (the crops are part
    of the key); the files are hashed once, when the search starts, not per trial."""
    import numpy as np

    from conftest import shrink
    from maskpipe.config import validate
    from maskpipe.layout import Layout
    from maskpipe.search.trial import Setup, input_files, inputs_digest, trial_key

    raw = validate(shrink(shipped_config, tmp_path / "data", results=str(tmp_path / "results")))
    L = Layout(raw["results"])
    assert input_files(raw) == sorted([L.crops("train"), L.crop_index("train"), L.crops("eval"),
                                       L.crop_index("eval"), L.labels(), L.folds()])
    for path in map(Path, input_files(raw)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("key,row\nk0,0\n")
    pixels = np.zeros((1, 8, 8, 3), np.uint8)
    np.save(L.crops("train"), pixels)

    def setup() -> Setup:
        return Setup(raw, ("c.yaml",), "a", (0,), tmp_path / "trials", inputs_digest(raw))

    first = trial_key(setup(), raw["models"]["a"])
    index = Path(L.crop_index("train")).read_bytes()
    pixels[0, 0, 0] = 255
    np.save(L.crops("train"), pixels)
    assert Path(L.crop_index("train")).read_bytes() == index
    again = setup()
    second = trial_key(again, raw["models"]["a"])
    assert second != first
    for path in input_files(raw):
        Path(path).unlink()  # a trial's key reads no file: the digest was taken once
    assert trial_key(again, raw["models"]["a"]) == second


def test_parallel_trials_are_one_per_gpu_and_one_for_a_compiled_model(caplog, monkeypatch):
    import torch

    from maskpipe.search.study import _parallel

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert _parallel(4, "auto") == 2 and _parallel(2, "cuda") == 2  # each trial claims a GPU
    assert _parallel(4, "cpu") == 4
    with caplog.at_level("WARNING"):
        assert _parallel(2, "auto", compiled=True) == 1  # torch.compile is not thread-safe
    assert "torch.compile is not thread-safe" in caplog.text
    assert _parallel(1, "cpu", compiled=True) == 1


def test_an_error_in_a_parallel_trial_ends_the_search_as_in_a_sequential_one(tiny_run, tmp_path,
                                                                             monkeypatch):
    """Optuna drops the errors of the last parallel trials (they are only marked failed): a CUDA
    error in a trial must still end `maskpipe search` with the error, not with exit 0."""
    from maskpipe.search import study

    def broken(setup, cfg):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(study, "run_trial", broken)
    config_path, _ = tiny_run
    extra = search_file(tmp_path)
    for parallel in (1, 2):
        with pytest.raises(RuntimeError, match="illegal memory access"):
            study.run_search([config_path, extra], trials=2, parallel=parallel,
                             folder=tmp_path / f"s{parallel}")
        states = [t.state.name for t in study.open_study(study.prepare([config_path, extra], 2, parallel,
                                                                        tmp_path / f"s{parallel}")).trials]
        assert states and set(states) == {"FAIL"}
