"""The GPU path on a real GPU: `pytest -m gpu` (bench/gpu_check.sh runs it). Skipped without CUDA.

Every head trains a fold and predicts under each AMP mode, channels-last on and off, with EMA;
two cases add torch.compile. Resume goes CPU -> CUDA and CUDA -> CUDA; the device claim runs
with and without CUDA_VISIBLE_DEVICES. A pseudo-label round's retrain and repredict run under
fp16 AMP, and a 2-trial search with ``parallel: 2`` (one trial per GPU: at once where there are
two). The data is the test suite's tiny demo run (which itself ran crop, train and predict on
CUDA, since the shipped config says ``device: auto``).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from maskpipe.train import predict as predict_step
from maskpipe.classes import PROB_COLUMNS
from maskpipe.config import load_raw
from maskpipe.layout import Layout
from maskpipe.train.predict import load_checkpoint, predict_probs
from maskpipe.train.augment import build_transforms
from maskpipe.train.data import CropDataset, join_split
from maskpipe.devices import claim_device
from maskpipe.train.loop import TrainJob, train_fold

from conftest import parallel_search, write_pseudo_labels

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

CUDA = torch.device("cuda")
HEADS = [("single", None), ("multitask", None), ("mask", None), ("gender", None), ("age", None),
         ("age", "wear")]
AMPS = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
TASK_COLUMNS = {"mask": 3, "gender": 2, "age": 3}


@pytest.fixture(scope="module")
def setup(tiny_run):
    config_path, layout = tiny_run
    return load_raw(config_path), layout


def _cfg(raw, **changes) -> dict:
    cfg = copy.deepcopy(raw["models"]["a"])
    cfg.update(ema_decay=0.9, **changes)
    return cfg


def _train(setup, out, cfg, device=CUDA, resume_file=None, pseudo=None, **kw) -> dict:
    raw, L = setup
    job = TrainJob("a", 0, L.crops("train"), L.crop_index("train"), L.labels(), L.folds(),
                   out / "c.pt", out / "m.json", out / "tb", device, resume_file, pseudo)
    return train_fold(job, {"train": raw["train"], "models.a": cfg}, **kw)


def _cases():
    # Every head under every AMP mode; channels-last alternates so each head and each AMP mode
    # runs with it on and off. Two cases add torch.compile.
    for i, (head, for_mask) in enumerate(HEADS):
        for j, amp in enumerate(AMPS):
            compiled = (head, amp) in {("single", "bf16"), ("multitask", "fp16")}
            yield pytest.param(head, for_mask, amp, (i + j) % 2 == 0, compiled,
                               id=f"{head}{'-' + for_mask if for_mask else ''}-{amp}"
                                  f"-{'cl' if (i + j) % 2 == 0 else 'nchw'}{'-compile' if compiled else ''}")


@pytest.mark.parametrize("head,for_mask,amp,channels_last,compiled", list(_cases()))
def test_every_head_trains_and_predicts_on_cuda(setup, tmp_path, head, for_mask, amp, channels_last, compiled):
    raw, L = setup
    cfg = _cfg(raw, head=head, for_mask=for_mask, amp=amp, channels_last=channels_last,
               compile=compiled, epochs=2)
    metrics = _train(setup, tmp_path, cfg)
    assert metrics["device"] == "cuda" and len(metrics["history"]) == 2
    assert all(np.isfinite(h["train_loss"]) and np.isfinite(h["val_loss"]) for h in metrics["history"])

    model, ckpt = load_checkpoint(tmp_path / "c.pt", CUDA)
    assert ckpt["ema"] is True
    tf = build_transforms(tuple(ckpt["image_size"]), ckpt["mean"], ckpt["std"], [], None)
    rows = join_split(L.crop_index("train"), L.labels(), L.folds())["row"].to_numpy()[:10]
    plain, merged = predict_probs(model, CropDataset(L.crops("train"), rows, None, tf), CUDA,
                                  {"hflip": True, "zooms": [0.9]}, 4, "t", head, AMPS[amp])
    assert len(plain) == len(merged) == 10
    for task, k in TASK_COLUMNS.items():
        cols = merged[[f"{task}{c}" for c in range(k)]].to_numpy()
        if head in ("single", "multitask") or head == task:
            np.testing.assert_allclose(cols.sum(1), 1.0, atol=1e-3)
        else:
            assert np.isnan(cols).all()  # the columns a task model does not predict


def test_training_inputs_are_channels_last_only_when_configured(setup, tmp_path, monkeypatch):
    import maskpipe.train.loop as loop

    raw, _ = setup
    real, formats = loop._to, []

    def spy(x, device, channels_last=False):
        out = real(x, device, channels_last)
        formats.append(out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous())
        return out

    monkeypatch.setattr(loop, "_to", spy)
    for channels_last in (False, True):
        formats.clear()
        _train(setup, tmp_path / str(channels_last), _cfg(raw, channels_last=channels_last, epochs=1))
        assert formats and set(formats) == {channels_last}  # training and validation batches


def test_resume_from_cpu_to_cuda_starts_over_and_cuda_to_cuda_resumes(setup, tmp_path, caplog):
    raw, _ = setup
    cfg = _cfg(raw, amp="fp16", epochs=2)
    resume = tmp_path / "resume.pt"
    with pytest.raises(KeyboardInterrupt):
        _train(setup, tmp_path, cfg, torch.device("cpu"), resume_file=resume, stop_after_epoch=1)
    with caplog.at_level(logging.INFO):  # was: GradScaler refused the CPU file's empty state
        metrics = _train(setup, tmp_path, cfg, resume_file=resume)
    assert "written on cpu" in caplog.text and "starting over" in caplog.text
    assert [h["epoch"] for h in metrics["history"]] == [1, 2] and not resume.exists()

    caplog.clear()
    with pytest.raises(KeyboardInterrupt):
        _train(setup, tmp_path, cfg, resume_file=resume, stop_after_epoch=1)
    first = torch.load(resume, weights_only=True)["history"]
    with caplog.at_level(logging.INFO):
        metrics = _train(setup, tmp_path, cfg, resume_file=resume)
    assert "resuming after epoch 1" in caplog.text
    assert metrics["history"][0] == first[0] and len(metrics["history"]) == 2


CLAIM = ("import json, torch; from maskpipe.devices import claim_device\n"
         "with claim_device('cuda') as d:\n"
         "    print(json.dumps([str(d), torch.cuda.current_device(), torch.cuda.device_count()]))")


def _claim_in_child(tmp_path, **env: str | None) -> tuple:
    """What ``claim_device`` gives a fresh process (CUDA_VISIBLE_DEVICES acts before CUDA starts)."""
    src = str(Path(__file__).resolve().parents[1] / "src")  # this checkout's maskpipe
    full = {**os.environ, "TMPDIR": str(tmp_path),
            "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    for var in ("SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "GPU_DEVICE_ORDINAL", "SLURM_JOB_ID"):
        full.pop(var, None)
    for var, value in env.items():
        full.pop(var, None) if value is None else full.__setitem__(var, value)
    out = subprocess.run([sys.executable, "-c", CLAIM], env=full, check=True, capture_output=True,
                         text=True).stdout
    return tuple(json.loads(out.strip().splitlines()[-1]))


def test_device_claim_with_and_without_cuda_visible_devices(tmp_path):
    n = torch.cuda.device_count()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES") or ",".join(map(str, range(n)))
    first = visible.split(",")[0]
    device, current, _ = _claim_in_child(tmp_path, CUDA_VISIBLE_DEVICES=None)
    assert (device, current) == ("cuda:0", 0)  # nothing else holds a GPU: the first one
    # A scheduler's choice of one GPU, and a user's export of one: used as given.
    assert _claim_in_child(tmp_path, CUDA_VISIBLE_DEVICES=first, SLURM_JOB_GPUS=first) == ("cuda:0", 0, 1)
    assert _claim_in_child(tmp_path, CUDA_VISIBLE_DEVICES=first) == ("cuda:0", 0, 1)
    if n < 2:
        pytest.skip("one GPU: the claim among several visible GPUs needs two")
    # A user's export of several GPUs: a second job gets another one and makes it current.
    with claim_device("cuda", tmp_path / f"maskpipe-gpus-{os.getuid()}") as mine:
        assert torch.cuda.current_device() == mine.index == 0
        device, current, count = _claim_in_child(tmp_path, CUDA_VISIBLE_DEVICES=visible)
    assert device == "cuda:1" and current == 1 and count == n


def test_a_pseudo_label_round_retrains_and_repredicts_on_cuda_under_amp(setup, tmp_path):
    """retrain: the fold's rows plus pseudo-labelled eval photos (a second crops file), balanced
    sampler, CutMix, EMA, fp16 with its grad scaler; repredict: the predict step on the result."""
    raw, L = setup
    labels = write_pseudo_labels(L, tmp_path / "pseudo.csv")
    cfg = _cfg(raw, amp="fp16", channels_last=True, sampler="balanced", epochs=2,
               mixup={**raw["models"]["a"]["mixup"], "prob": 1.0, "cutmix_alpha": 1.0})
    metrics = _train(setup, tmp_path, cfg, pseudo=(L.crops("eval"), L.crop_index("eval"), labels))
    assert metrics["device"] == "cuda" and metrics["n_pseudo"] == len(pd.read_csv(labels)) > 0
    assert all(np.isfinite(h["train_loss"]) and np.isfinite(h["val_loss"]) for h in metrics["history"])
    oof, test = tmp_path / "oof.csv", tmp_path / "test.csv"
    predict_step.predict_fold(
        predict_step.PredictJob("a", 0, tmp_path / "c.pt", L.crops("train"), L.crop_index("train"),
                                L.crops("eval"), L.crop_index("eval"), L.labels(), L.folds(), oof, test, CUDA),
        {"tta": {"hflip": True, "zooms": []}, "batch_size": 8, "amp": "fp16"})
    probs = pd.read_csv(test)[PROB_COLUMNS].to_numpy()
    assert len(probs) == len(pd.read_csv(L.crop_index("eval")))
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-3)


def test_a_parallel_search_runs_its_trials_on_cuda(tiny_run, tmp_path):
    """`search.parallel: 2`: each trial's jobs claim a GPU (at once on two GPUs; one after the
    other on one, where parallel is capped at the GPU count), under the model's bf16 AMP."""
    from maskpipe.search import run_search

    config_path, _ = tiny_run
    done = run_search([config_path, parallel_search(tmp_path)], folder=tmp_path / "out")
    assert done.completed == 2
    trials = sorted((tmp_path / "out" / "trials").iterdir())
    assert len(trials) == 2
    for trial in trials:
        metrics = json.loads(Path(Layout(str(trial)).train_metrics("a", 0)).read_text())
        assert metrics["device"] == "cuda" and np.isfinite(metrics["history"][0]["train_loss"])
