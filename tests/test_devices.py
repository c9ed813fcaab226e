"""The GPU path's logic, checked on a CPU: device claims, worker counts, resume across devices.

What only CUDA would show (tensors made on another device than their neighbours) is caught in
tests/test_devices_placement.py; tests/test_gpu.py runs the real thing where CUDA is present.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
import sys
import threading
from unittest import mock

import pytest
import torch
from torch import nn

from maskpipe.config import validate
from maskpipe.crop.detect import DetectorSettings
from maskpipe.io import MaskpipeError
from maskpipe.dag.ports import Job
from maskpipe.dag.table import STEPS
from maskpipe import devices
from maskpipe.devices import (
    claim_device,
    claim_slot,
    default_lock_dir,
    resolve_workers,
    scheduler_assigned,
    usable_cores,
)
from maskpipe.train.loop import _to
from maskpipe.train.resume import ResumeState, fingerprint, runtime
from conftest import parallel_search


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch believes it has CUDA; every set_device call is recorded instead of made."""
    calls: list[torch.device] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", calls.append)
    for var in ("CUDA_VISIBLE_DEVICES", *devices.SCHEDULER_GPU_VARS, "SLURM_JOB_ID"):
        monkeypatch.delenv(var, raising=False)
    return calls


def test_cpu_claims_nothing(tmp_path, fake_cuda):
    with claim_device("cpu", tmp_path, device_count=4) as device:
        assert device == torch.device("cpu")
    assert fake_cuda == [] and not list(tmp_path.iterdir())


def test_the_only_gpu_is_made_current(tmp_path, fake_cuda):
    with claim_device("cuda", tmp_path, device_count=1) as device:
        assert device == torch.device("cuda", 0)
    assert fake_cuda == [torch.device("cuda", 0)] and not list(tmp_path.iterdir())


def test_concurrent_jobs_get_different_gpus_and_make_them_current(tmp_path, fake_cuda):
    with claim_device("cuda", tmp_path, device_count=3) as a, claim_device("cuda", tmp_path, device_count=3) as b:
        assert (a, b) == (torch.device("cuda", 0), torch.device("cuda", 1))
    assert fake_cuda == [a, b]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu0.lock", "gpu1.lock"]


def test_a_users_multi_gpu_export_is_claimed_from_by_physical_id(tmp_path, fake_cuda, monkeypatch):
    # The bug: any CUDA_VISIBLE_DEVICES was taken for a scheduler's choice, so 4 jobs under
    # `export CUDA_VISIBLE_DEVICES=0,1,2,3` all ran on cuda:0.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert not scheduler_assigned()
    with claim_slot(["2"], tmp_path):  # physical GPU 2 is held by a job that sees all GPUs
        with claim_device("cuda", tmp_path, device_count=2) as device:
            assert device == torch.device("cuda", 1)  # visible index 1 = physical GPU 3
    assert (tmp_path / "gpu3.lock").is_file()


def test_a_scheduler_chosen_gpu_is_used_as_given(tmp_path, fake_cuda, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5")
    monkeypatch.setenv("SLURM_STEP_GPUS", "5")
    assert scheduler_assigned()
    with claim_device("cuda", tmp_path, device_count=1) as device:
        assert device == torch.device("cuda", 0)
    assert fake_cuda == [device] and not list(tmp_path.iterdir())


def test_a_scheduler_allocation_of_several_gpus_locks_per_job(monkeypatch):
    env = {"CUDA_VISIBLE_DEVICES": "0,1", "SLURM_JOB_GPUS": "4,5", "SLURM_JOB_ID": "77"}
    # Another job's visible "0" can be another physical GPU: its locks must not meet ours.
    assert default_lock_dir(env).name.endswith("-slurm77")
    assert not default_lock_dir({"CUDA_VISIBLE_DEVICES": "0,1", "SLURM_JOB_ID": "77"}).name.endswith("77")
    assert devices.device_ids(2, env) == ["0", "1"]
    assert devices.device_ids(2, {"CUDA_VISIBLE_DEVICES": "GPU-ab/12,MIG-x:1"}) == ["GPU-ab_12", "MIG-x_1"]
    assert devices.device_ids(2, {}) == ["0", "1"]


def test_cuda_without_a_gpu_is_an_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(MaskpipeError, match="no CUDA device"), claim_device("cuda", device_count=0):
        pass


def test_the_crop_step_claims_a_device(monkeypatch, tmp_path):
    from maskpipe import crop as crop_step
    from maskpipe.steps import crop as crop_shell

    claimed, used = [], []

    @contextlib.contextmanager
    def claim(setting):
        claimed.append(setting)
        yield torch.device("cuda", 1)

    monkeypatch.setattr(devices, "claim_device", claim)
    monkeypatch.setattr(crop_step, "crop_splits", lambda *a, **k: used.append(a[6]))
    job = Job("crop", {"train_manifest": None, "eval_manifest": None},
              {p.name: tmp_path / p.name for p in STEPS["crop"].outputs},
              {"root": tmp_path, "cache": tmp_path / "cache"})
    crop_shell.run(job, {"crop": {"device": "auto"}})
    assert claimed == ["auto"] and used == ["cuda:1"]


def test_detections_are_cached_per_device_type():
    assert DetectorSettings(0.5, 120, device="cuda").key() != DetectorSettings(0.5, 120).key()


def test_auto_workers_follow_the_jobs_cores(monkeypatch):
    monkeypatch.setattr(devices.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert usable_cores({}) == 16
    assert resolve_workers("auto", "cuda", {}) == 8  # capped
    assert resolve_workers("auto", "cuda", {"OMP_NUM_THREADS": "4"}) == 3  # Snakemake's threads: 4
    assert resolve_workers("auto", "cuda", {"OMP_NUM_THREADS": "1"}) == 0
    monkeypatch.setattr(devices.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert resolve_workers("auto", "cuda", {"OMP_NUM_THREADS": "8"}) == 1  # affinity binds tighter
    assert resolve_workers(5, "cuda", {}) == 5
    for bad in (-1, "many", True):
        with pytest.raises(MaskpipeError, match="train.num_workers"):
            resolve_workers(bad, "cpu", {})


def test_auto_gives_a_small_cpu_job_no_workers(monkeypatch):
    """On a CPU of few cores a worker takes a core from the step's own torch threads (on 2 cores
    one cost 12%); a count is still obeyed, and larger CPU jobs keep the rule."""
    monkeypatch.setattr(devices.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert resolve_workers("auto", "cpu", {}) == 0
    assert resolve_workers(1, "cpu", {}) == 1
    monkeypatch.setattr(devices.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert resolve_workers("auto", "cpu", {"OMP_NUM_THREADS": str(devices.SMALL_CPU_CORES)}) == 0
    assert resolve_workers("auto", "cpu", {"OMP_NUM_THREADS": str(devices.SMALL_CPU_CORES + 1)}) == devices.SMALL_CPU_CORES
    assert resolve_workers("auto", "cpu", {}) == 8


def test_num_workers_defaults_to_auto_and_takes_counts(shipped_config):
    base = {k: v for k, v in shipped_config.items() if k != "train"}
    assert validate(base)["train"]["num_workers"] == "auto"
    assert validate({**base, "train": {"num_workers": 3}})["train"]["num_workers"] == 3
    with pytest.raises(MaskpipeError, match="num_workers"):
        validate({**base, "train": {"num_workers": "many"}})


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_inputs_go_channels_last_only_where_configured_on_cuda(device, channels_last):
    x = mock.Mock()
    _to(x, torch.device(device), channels_last)
    want = torch.channels_last if channels_last and device == "cuda" else torch.preserve_format
    assert x.to.call_args.kwargs["memory_format"] == want


# -- resume across devices -------------------------------------------------------------------

CPU = runtime(torch.device("cpu"), None, False)
CUDA_FP16 = runtime(torch.device("cuda"), torch.float16, True)


def _objects(scaler_on: bool):
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    # The CPU GradScaler behaves like CUDA's here: enabled, it refuses an empty state.
    return model, opt, torch.optim.lr_scheduler.StepLR(opt, 1), torch.amp.GradScaler("cpu", enabled=scaler_on)


def test_the_fingerprint_holds_the_device_and_amp(tmp_path):
    f = tmp_path / "x.csv"
    f.write_text("a\n")
    keys = {fingerprint("m", 0, {}, {}, [f], where) for where in
            (CPU, CUDA_FP16, runtime(torch.device("cuda"), torch.bfloat16, False))}
    assert len(keys) == 3
    assert CUDA_FP16 == {"device": "cuda", "amp": "float16", "grad_scaler": True}


def test_a_cpu_resume_file_starts_a_cuda_run_over_saying_why(tmp_path, caplog):
    path = tmp_path / "resume.pt"
    ResumeState([{"epoch": 1}], {"val_f1": 0.5}, 1).save(path, "cpu-key", *_objects(False), None, CPU)
    with caplog.at_level(logging.WARNING):
        assert ResumeState.load(path, "cuda-key", *_objects(True), None, CUDA_FP16) is None
    assert "written on cpu (amp none, grad scaler off), this run is on cuda (amp float16" in caplog.text


def test_an_empty_scaler_state_resumes_without_it(tmp_path, caplog):
    # A file from before the device was fingerprinted: same key, no scaler state. Loading it
    # into an enabled scaler raised on every rerun until resume.pt was deleted by hand.
    path = tmp_path / "resume.pt"
    ResumeState([{"epoch": 1}], {"val_f1": 0.5}, 1).save(path, "k", *_objects(False), None)
    with pytest.raises(RuntimeError):
        _objects(True)[3].load_state_dict({})
    model, opt, schedule, scaler = _objects(True)
    with caplog.at_level(logging.WARNING):
        state = ResumeState.load(path, "k", model, opt, schedule, scaler, None)
    assert state is not None and state.epoch == 1
    assert "no grad scaler state" in caplog.text


# -- parallel search trials ------------------------------------------------------------------

def _on_cpu(real, record):
    """``real`` (train_fold or predict_fold, whose job holds the device) given the CPU instead of
    the claimed device, which ``record(device)`` sees first: the claims are CUDA's, the work runs
    here."""
    signature = inspect.signature(real)

    def run(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        job = bound.arguments["job"]
        record(job.device)
        bound.arguments["job"] = dataclasses.replace(job, device=torch.device("cpu"))
        return real(*bound.args, **bound.kwargs)
    return run


def test_parallel_search_trials_claim_a_gpu_each_current_in_their_own_thread(tiny_run, tmp_path, fake_cuda,
                                                                             monkeypatch):
    """`search.parallel: 2` on a machine with 2 (simulated) GPUs: the trials run at once in two
    threads; each trial's train and predict job claims a free GPU through the lock files, makes
    it current in its own thread (CUDA's current device is per thread) and gives it back."""
    from maskpipe.train import predict as predict_step
    from maskpipe.search import run_search
    from maskpipe.train import loop

    config_path, _ = tiny_run
    locks = tmp_path / "locks"
    # Two GPUs, for maskpipe's device code only (the claims and search.parallel's cap): torch's
    # own checks (the optimizer's, in the trials' CPU training) must still see none.
    claims = {devices.__name__, "maskpipe.search.study"}
    asked_by_claims = lambda: sys._getframe(2).f_globals.get("__name__") in claims  # noqa: E731
    monkeypatch.setattr(torch.cuda, "is_available", lambda: asked_by_claims())
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2 if asked_by_claims() else 0)
    monkeypatch.setattr(devices, "default_lock_dir", lambda env=None: locks)
    current: dict[int, torch.device] = {}  # thread -> its current device

    def set_device(device):
        fake_cuda.append(device)
        current[threading.get_ident()] = device

    monkeypatch.setattr(torch.cuda, "set_device", set_device)
    together = threading.Barrier(2, timeout=120)  # both trials' training jobs must run at once
    jobs: list[tuple[str, int, torch.device]] = []

    def training(device):
        jobs.append(("train", threading.get_ident(), device))
        assert current[threading.get_ident()] == device
        together.wait()
        with pytest.raises(MaskpipeError, match="all 2 GPU"):  # both GPUs are held now
            with claim_slot(["0", "1"], locks, timeout=0):
                pass
        together.wait()

    def predicting(device):
        jobs.append(("predict", threading.get_ident(), device))
        assert current[threading.get_ident()] == device

    monkeypatch.setattr(loop, "train_fold", _on_cpu(loop.train_fold, training))
    monkeypatch.setattr(predict_step, "predict_fold", _on_cpu(predict_step.predict_fold, predicting))
    done = run_search([config_path, parallel_search(tmp_path)], folder=tmp_path / "out")

    assert done.completed == 2
    trained = [(thread, device) for step, thread, device in jobs if step == "train"]
    assert len({t for t, _ in trained}) == 2  # two threads ...
    assert {d for _, d in trained} == {torch.device("cuda", 0), torch.device("cuda", 1)}  # ... two GPUs
    assert sorted(step for step, _, _ in jobs) == ["predict", "predict", "train", "train"]
    with claim_slot(["0", "1"], locks, timeout=0), claim_slot(["0", "1"], locks, timeout=0):
        pass  # both GPUs were given back
