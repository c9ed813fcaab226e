"""Every shipped recipe validates, runs alone (its models and only those, in both engines), and
each of its models trains one shrunk epoch on demo data."""

from __future__ import annotations

import copy
import shutil

import pytest
import timm
import yaml

from conftest import REPO, make_project, snakemake_jobs
from maskpipe.cli import main as cli_main
from maskpipe.config import load_raw
from maskpipe.train.loop import TrainJob, train_fold

RECIPES = sorted((REPO / "workflow" / "recipes").glob("*.yaml"))


def test_there_are_six_recipes():
    assert len(RECIPES) == 6


def shrink_model(cfg: dict, crop_hw: tuple[int, int]) -> dict:
    """One epoch, 32 px, no pretraining; crop sizes scaled to the tiny crops."""
    cfg = copy.deepcopy(cfg)
    cfg.update(pretrained=False, epochs=1, image_size=[32, 32], batch_size=16)
    cfg["freeze_backbone_epochs"] = min(cfg["freeze_backbone_epochs"], 1)
    for t in cfg["preprocess"] + cfg["augment"]:
        if t["name"] == "CenterCrop":
            t.update(height=crop_hw[0], width=crop_hw[1])
        if t["name"] == "RandomResizedCrop":
            t["size"] = [32, 32]
    return cfg


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_validates_and_trains(recipe, tiny_run, tmp_path):
    raw = load_raw([REPO / "config.yaml", recipe])  # as `snakemake --configfile recipe` merges it
    own = yaml.safe_load(recipe.read_text())["models"]
    assert list(raw["models"]) == list(own)  # replace: [models]: the recipe's models alone
    config_path, L = tiny_run
    tiny = load_raw(config_path)
    crop_hw = tuple(tiny["crop"]["size"])
    for name in own:
        cfg = raw["models"][name]
        assert timm.is_model(cfg["arch"]), cfg["arch"]
        for fold in range(tiny["folds"]["k"]):  # the tiny config's 2 folds
            out = tmp_path / name / str(fold)
            metrics = train_fold(TrainJob(name, fold, L.crops("train"), L.crop_index("train"),
                                          L.labels(), L.folds(), out / "c.pt", out / "m.json", out / "tb"),
                                 {"train": tiny["train"], f"models.{name}": shrink_model(cfg, crop_hw)})
            assert len(metrics["history"]) == 1 and 0 <= metrics["best_val_f1"] <= 1


@pytest.fixture(scope="module")
def project(tmp_path_factory, shipped_config, demo_root):
    """The shipped workflow and config.yaml, with data and results pointed at tmp by one more
    config file (it sets no models, so the recipe's stay the only ones)."""
    project = make_project(tmp_path_factory.mktemp("recipes"), shipped_config)
    shutil.copytree(REPO / "workflow" / "recipes", project / "recipes")
    (project / "where.yaml").write_text(yaml.safe_dump({"data": {"root": str(demo_root)},
                                                        "results": "results/recipe"}))
    return project


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_runs_alone_in_both_engines(recipe, project):
    own = list(yaml.safe_load(recipe.read_text())["models"])
    files = [project / "recipes" / recipe.name, project / "where.yaml"]
    jobs, _ = snakemake_jobs(project, files)
    k = load_raw([project / "config.yaml", *files])["folds"]["k"]
    trained = sorted((j.wildcards_dict["model"], int(j.wildcards_dict["fold"]))
                     for j in jobs if j.rule.name == "train")
    assert trained == sorted((m, f) for m in own for f in range(k))
    # DVC: one params file, the merged config, beside dvc.yaml; the stages read it
    out = project / "dvc.yaml"
    args = ["dvc-yaml", "--config", str(project / "config.yaml"), *map(str, files), "--out", str(out)]
    assert cli_main(args) == 0 and cli_main([*args, "--check"]) == 0
    stages = yaml.safe_load(out.read_text())["stages"]
    assert stages["train"]["matrix"]["model"] == own
    assert stages["train"]["params"] == [{"params.yaml": ["train", "models.${item.model}"]}]
    assert "--config params.yaml" in stages["train"]["cmd"]
    assert list(load_raw(project / "params.yaml")["models"]) == own
