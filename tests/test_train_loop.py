"""Training options reachable from config, resume, freeze, and GPU slot claiming."""

from __future__ import annotations

import copy
import logging
import multiprocessing as mp
import os
import signal
import time

import numpy as np
import pytest
import torch

from maskpipe.config import load_raw
from maskpipe.io import MaskpipeError
from maskpipe.devices import claim_device, claim_slot
from maskpipe.train.loop import TrainJob, seed_everything, train_fold
from maskpipe.train.model import create_model


@pytest.fixture(scope="module")
def setup(tiny_run):
    config_path, L = tiny_run
    raw = load_raw(config_path)
    return raw, L


def run(setup, tmp_path, edit=None, fold=0, resume_file=None, **kw):
    raw, L = setup
    cfg = copy.deepcopy(raw["models"]["a"])
    if edit:
        edit(cfg)
    out = tmp_path
    metrics = train_fold(TrainJob("a", fold, L.crops("train"), L.crop_index("train"), L.labels(),
                                  L.folds(), out / "checkpoint.pt", out / "metrics.json", out / "tb",
                                  resume=resume_file),
                         {"train": raw["train"], "models.a": cfg}, **kw)
    return metrics, torch.load(out / "checkpoint.pt", weights_only=True)


def set_(path, value):
    def edit(cfg):
        node = cfg
        *parents, last = path.split(".")
        for p in parents:
            node = node[p]
        # dict values update the (schema-defaulted) section instead of replacing it
        node[last] = {**node[last], **value} if isinstance(value, dict) else value
    return edit


LOSS = {"weight": 1.0, "label_smoothing": 0.0, "class_weights": "none", "gamma": 2.0}

OPTIONS = {
    "adam": set_("optimizer.name", "adam"),
    "sgd": set_("optimizer.name", "sgd"),
    "madgrad": set_("optimizer.name", "madgrad"),
    "step": set_("scheduler", {"name": "step", "step_size": 1, "gamma": 0.5}),
    "multistep": set_("scheduler", {"name": "multistep", "milestones": [1], "gamma": 0.5}),
    "cyclic": set_("scheduler", {"name": "cyclic", "base_lr": 1e-5, "max_lr": 1e-3, "cycle_epochs": 0.5}),
    "onecycle": set_("scheduler", {"name": "onecycle", "max_lr": 1e-3}),
    "plateau": set_("scheduler", {"name": "plateau", "patience": 0}),
    "none": set_("scheduler", {"name": "none"}),
    "focal": set_("loss", [{**LOSS, "name": "focal", "gamma": 2.0, "class_weights": "balanced"}]),
    "ce+f1": set_("loss", [{**LOSS, "name": "ce", "weight": 0.3, "label_smoothing": 0.1},
                           {**LOSS, "name": "f1", "weight": 0.7}]),
    "balanced_ce": set_("loss", [{**LOSS, "name": "ce", "class_weights": "balanced"}]),
    "cutmix": set_("mixup", {"prob": 1.0, "cutmix_alpha": 1.0}),
    "mixup": set_("mixup", {"prob": 1.0, "mixup_alpha": 0.4, "cutmix_alpha": 0.0}),
    "sampler": set_("sampler", "balanced"),
    "accumulate": set_("accumulate", 2),
    "ema": set_("ema_decay", 0.9),
    "augment": set_("augment", [{"name": "CLAHE", "p": 0.5}, {"name": "CoarseDropout", "p": 0.5},
                                {"name": "RandomResizedCrop", "size": [32, 32], "scale": [0.7, 1.0]}]),
    "preprocess": set_("preprocess", [{"name": "CenterCrop", "height": 36, "width": 28}]),
    "freeze": set_("freeze_backbone_epochs", 1),
    "multitask": set_("head", "multitask"),
    "multitask+cutmix+focal": lambda c: [set_("head", "multitask")(c), OPTIONS["cutmix"](c),
                                         OPTIONS["focal"](c)],
    "mask_model": set_("head", "mask"),
    "compile": set_("compile", True),  # torch.compile on CPU: about a minute cold, once
    "age_model": set_("head", "age"),
}


@pytest.mark.parametrize("name", list(OPTIONS))
def test_every_option_trains(setup, tmp_path, name):
    metrics, ckpt = run(setup, tmp_path, OPTIONS[name])
    assert len(metrics["history"]) == 1
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    assert 0 <= metrics["best_val_f1"] <= 1


def _params(state):
    return {k: v for k, v in state.items() if "running" not in k and "num_batches" not in k}


def test_age_model_for_one_mask_state(setup, tmp_path):
    import pandas as pd

    raw, L = setup
    metrics, ckpt = run(setup, tmp_path, lambda c: c.update(head="age", for_mask="incorrect"))
    labels = pd.read_csv(L.labels()).merge(pd.read_csv(L.folds()), on="person")
    assert metrics["n_train"] == ((labels["mask"] == 1) & (labels["fold"] != 0)).sum()
    assert ckpt["for_mask"] == "incorrect"
    with pytest.raises(MaskpipeError, match="only an age model"):
        run(setup, tmp_path, lambda c: c.update(head="mask", for_mask="wear"))


def test_frozen_backbone_stays_frozen(setup, tmp_path):
    raw, _ = setup
    seed_everything(raw["train"]["seed"] + 0)
    init = create_model("test_resnet").state_dict()  # the loop builds its model right after seeding
    _, ckpt = run(setup, tmp_path, OPTIONS["freeze"])
    head = {k for k in init if k.startswith(create_model("test_resnet").default_cfg["classifier"])}
    assert head
    changed = {k for k, v in _params(ckpt["state_dict"]).items() if not torch.equal(v, init[k])}
    assert changed == head


def test_resume_after_a_kill_ends_like_an_uninterrupted_run(setup, tmp_path):
    three = set_("epochs", 3)

    def edit(cfg):
        three(cfg)
        cfg["augment"] = [{"name": "HorizontalFlip", "p": 0.5}, {"name": "CoarseDropout", "p": 0.5}]
        cfg["mixup"]["prob"] = 0.5
        cfg["ema_decay"] = 0.9

    whole, whole_ckpt = run(setup, tmp_path / "whole", edit)
    resume = tmp_path / "killed" / "resume.pt"
    with pytest.raises(KeyboardInterrupt):
        run(setup, tmp_path / "killed", edit, resume_file=resume, stop_after_epoch=1)
    assert resume.is_file()
    resumed, resumed_ckpt = run(setup, tmp_path / "killed", edit, resume_file=resume)
    assert [h["train_loss"] for h in resumed["history"]] == [h["train_loss"] for h in whole["history"]]
    assert resumed["best_val_f1"] == whole["best_val_f1"]
    assert all(torch.equal(resumed_ckpt["state_dict"][k], v) for k, v in whole_ckpt["state_dict"].items())
    assert not resume.exists()  # a finished job leaves no resume state behind


def test_resume_state_of_another_config_is_not_trusted(setup, tmp_path):
    resume = tmp_path / "resume.pt"
    with pytest.raises(KeyboardInterrupt):
        run(setup, tmp_path, set_("epochs", 2), resume_file=resume, stop_after_epoch=1)

    def other(cfg):
        cfg["epochs"] = 2
        cfg["optimizer"]["lr"] = 0.0005

    metrics, _ = run(setup, tmp_path, other, resume_file=resume)
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]  # started over
    resume.write_bytes(b"garbage")
    metrics, _ = run(setup, tmp_path, other, resume_file=resume)
    assert len(metrics["history"]) == 2


def test_resume_state_of_other_crops_with_the_same_index_is_not_trusted(setup, tmp_path, caplog):
    raw, L = setup
    resume = tmp_path / "resume.pt"
    with pytest.raises(KeyboardInterrupt):
        run(setup, tmp_path, set_("epochs", 2), resume_file=resume, stop_after_epoch=1)
    # a re-crop (say at another crop.size) that keeps the crop index byte-identical
    recropped = tmp_path / "recropped.npy"
    np.save(recropped, 255 - np.load(L.crops("train")))
    cfg = copy.deepcopy(raw["models"]["a"])
    cfg["epochs"] = 2
    with caplog.at_level(logging.INFO, logger="maskpipe.train.resume"):
        metrics = train_fold(TrainJob("a", 0, recropped, L.crop_index("train"), L.labels(), L.folds(),
                                      tmp_path / "checkpoint.pt", tmp_path / "metrics.json",
                                      tmp_path / "tb", resume=resume),
                             {"train": raw["train"], "models.a": cfg})
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]  # started over
    assert "other inputs; starting over" in caplog.text


def test_resume_state_of_another_weights_file_under_the_same_name_is_not_trusted(setup, tmp_path, caplog):
    import timm

    weights = tmp_path / "weights.pth"

    def start_from(seed):
        torch.manual_seed(seed)
        torch.save(timm.create_model("test_resnet").state_dict(), weights)

    def edit(cfg):
        cfg.update(epochs=2, pretrained_file=str(weights))

    resume = tmp_path / "resume.pt"
    start_from(0)
    with pytest.raises(KeyboardInterrupt):
        run(setup, tmp_path, edit, resume_file=resume, stop_after_epoch=1)
    start_from(1)  # same path in the config, other contents
    with caplog.at_level(logging.INFO, logger="maskpipe.train.resume"):
        metrics, _ = run(setup, tmp_path, edit, resume_file=resume)
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]  # started over
    assert "other inputs; starting over" in caplog.text


def test_early_stopping(setup, tmp_path):
    def edit(cfg):
        cfg["epochs"] = 6
        cfg["early_stopping_patience"] = 1
        cfg["optimizer"]["lr"] = 1e-9  # nothing improves after the first epoch
        cfg["scheduler"]["name"] = "none"

    metrics, _ = run(setup, tmp_path, edit)
    assert len(metrics["history"]) < 6


def test_odd_batch_with_mixup_is_refused(setup, tmp_path):
    def edit(cfg):
        OPTIONS["cutmix"](cfg)
        cfg["batch_size"] = 7

    with pytest.raises(MaskpipeError, match="even batch"):
        run(setup, tmp_path, edit)


def test_slots_are_claimed_once_each(tmp_path):
    with claim_slot(3, tmp_path) as a, claim_slot(3, tmp_path) as b, claim_slot(3, tmp_path) as c:
        assert sorted([a, b, c]) == [0, 1, 2]
        with pytest.raises(MaskpipeError, match="all 3 GPU"):
            with claim_slot(3, tmp_path, timeout=0.2, poll=0.05):
                pass
    with claim_slot(3, tmp_path) as again:
        assert again == 0  # released at the end of the block


def _hold(lock_dir, ready):
    with claim_slot(2, lock_dir) as slot:
        ready.put(slot)
        time.sleep(60)


def test_a_killed_job_releases_its_gpu(tmp_path):
    ctx = mp.get_context("fork")
    ready = ctx.Queue()
    proc = ctx.Process(target=_hold, args=(tmp_path, ready))
    proc.start()
    assert ready.get(timeout=20) == 0
    with claim_slot(2, tmp_path) as slot:
        assert slot == 1  # slot 0 is held by the other process
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    with claim_slot(2, tmp_path, timeout=5) as slot:
        assert slot == 0


def test_claim_device_on_cpu_and_under_a_scheduler(tmp_path, monkeypatch):
    with claim_device("cpu", tmp_path, device_count=4) as device:
        assert device.type == "cpu"
    monkeypatch.setattr("maskpipe.devices.resolve_device", lambda s: torch.device("cuda"))
    with claim_device("cuda", tmp_path, device_count=2) as first, \
            claim_device("cuda", tmp_path, device_count=2) as second:
        assert {first.index, second.index} == {0, 1}
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    monkeypatch.setenv("SLURM_JOB_GPUS", "3")
    with claim_device("cuda", tmp_path, device_count=1) as device:
        assert device.index == 0  # the scheduler chose: use the one visible device
    assert not list(tmp_path.glob("gpu3.lock"))  # and claim nothing (more in test_devices.py)
