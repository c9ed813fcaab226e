"""Every shipped recipe validates, and each of its models trains one shrunk epoch on demo data."""

from __future__ import annotations

import copy

import pytest
import timm
import torch
import yaml

from conftest import REPO
from maskpipe.config import load_raw
from maskpipe.train.loop import train_fold

RECIPES = sorted((REPO / "workflow" / "recipes").glob("*.yaml"))


def test_there_are_five_recipes():
    assert len(RECIPES) == 5


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
    assert set(own) <= set(raw["models"])
    config_path, L = tiny_run
    tiny = load_raw(config_path)
    crop_hw = tuple(tiny["crop"]["size"])
    for name in own:
        cfg = raw["models"][name]
        assert timm.is_model(cfg["arch"]), cfg["arch"]
        for fold in range(tiny["folds"]["k"]):  # the tiny config's 2 folds
            out = tmp_path / name / str(fold)
            metrics = train_fold(L.crops("train"), L.crop_index("train"), L.labels(), L.folds(), fold,
                                 name, shrink_model(cfg, crop_hw), tiny["train"], torch.device("cpu"),
                                 out / "c.pt", out / "m.json", out / "tb")
            assert len(metrics["history"]) == 1 and 0 <= metrics["best_val_f1"] <= 1
