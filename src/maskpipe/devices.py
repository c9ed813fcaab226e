"""Give each concurrent GPU job on one machine its own GPU, and each job its CPU budget.

Snakemake's `--resources gpu=N` only counts: it lets N GPU jobs run at once but tells none of
them which device to use, so all would pile onto cuda:0. Each job here claims the first free
visible device by taking an exclusive, non-blocking ``flock`` on ``<lock_dir>/gpu<id>.lock``,
where ``<id>`` is the device's entry in ``CUDA_VISIBLE_DEVICES`` (or its index), so jobs that see
the devices under different numbers still lock the same physical GPU. The kernel releases the
lock when the process exits, even on ``kill -9``, so a crashed job never leaves a device claimed.

Where a scheduler chose the device (Slurm sets ``SLURM_JOB_GPUS``, ``SLURM_STEP_GPUS`` or
``GPU_DEVICE_ORDINAL`` beside ``CUDA_VISIBLE_DEVICES``) the job sees one device and uses it; an
allocation of several is claimed from like a user's own ``CUDA_VISIBLE_DEVICES=0,1,2,3``, with the
lock files kept per Slurm job (another job's device 0 may be a different GPU).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import torch

from maskpipe.io import MaskpipeError

log = logging.getLogger(__name__)

#: Variables a scheduler sets when it assigns GPUs to a job (Slurm's; GPU_DEVICE_ORDINAL also SGE).
SCHEDULER_GPU_VARS = ("SLURM_STEP_GPUS", "SLURM_JOB_GPUS", "GPU_DEVICE_ORDINAL")
#: Most DataLoader workers ``num_workers: auto`` starts: past 8, a crop feed gains little.
MAX_AUTO_WORKERS = 8
#: A CPU training job with at most this many cores gets no workers from ``num_workers: auto``
#: (measured on 2; more cores than 4 keep the GPU rule, unmeasured on CPU: set a count there).
SMALL_CPU_CORES = 4


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when present, else CPU; asking for CUDA without one is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise MaskpipeError("device: cuda was asked for but torch sees no CUDA device")
    return torch.device(device)


def usable_cores(env: Mapping[str, str] | None = None) -> int:
    """CPU cores this job may use: its affinity (Slurm's, taskset's) capped by OMP_NUM_THREADS,
    which Snakemake sets to the rule's ``threads`` for every job, locally and under Slurm."""
    env = os.environ if env is None else env
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        cores = os.cpu_count() or 1
    budget = env.get("OMP_NUM_THREADS", "")
    if budget.isdigit() and int(budget) > 0:
        cores = min(cores, int(budget))
    return max(1, cores)


def resolve_workers(setting: int | str, device_type: str,
                    env: Mapping[str, str] | None = None) -> int:
    """DataLoader workers: an explicit count, or ``auto``: every usable core but the one the
    training loop runs on, at most :data:`MAX_AUTO_WORKERS`; none for a CPU job of at most
    :data:`SMALL_CPU_CORES` cores."""
    if setting == "auto":
        cores = usable_cores(env)
        # On CPU the step's torch ops already run a thread on every core of the job
        # (OMP_NUM_THREADS), and the feed (memory-mapped uint8 crops, albumentations at the
        # model's size) is ~10% of a step: a worker process gains at most that, and on few cores
        # it takes a core from those threads. On 2 cores one worker cost 12% (resnet10t at 64 px:
        # 62-63 img/s against 71-73 without; bench/train.py --results prints these rows).
        if device_type == "cpu" and cores <= SMALL_CPU_CORES:
            return 0
        return min(MAX_AUTO_WORKERS, cores - 1)
    if isinstance(setting, bool) or not isinstance(setting, int) or setting < 0:
        raise MaskpipeError(f"train.num_workers: {setting!r} is neither 'auto' nor a count >= 0")
    return setting


def scheduler_assigned(env: Mapping[str, str] | None = None) -> bool:
    """Whether a scheduler, not the user, set ``CUDA_VISIBLE_DEVICES`` for this job."""
    env = os.environ if env is None else env
    return bool(env.get("CUDA_VISIBLE_DEVICES", "").strip()) and any(env.get(v) for v in SCHEDULER_GPU_VARS)


def device_ids(count: int, env: Mapping[str, str] | None = None) -> list[str]:
    """A stable name per visible device: its ``CUDA_VISIBLE_DEVICES`` entry (an index, a GPU or
    MIG UUID), else its index; only the characters a file name may hold."""
    env = os.environ if env is None else env
    visible = [v.strip() for v in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if len(visible) < count:
        visible = [str(i) for i in range(count)]
    return [re.sub(r"[^A-Za-z0-9_.-]", "_", v) for v in visible[:count]]


def default_lock_dir(env: Mapping[str, str] | None = None) -> Path:
    """``$TMPDIR/maskpipe-gpus-$UID``, per Slurm job where a scheduler assigned the GPUs."""
    env = os.environ if env is None else env
    job = f"-slurm{env['SLURM_JOB_ID']}" if scheduler_assigned(env) and env.get("SLURM_JOB_ID") else ""
    return Path(tempfile.gettempdir()) / f"maskpipe-gpus-{os.getuid()}{job}"


@contextlib.contextmanager
def claim_slot(slots: int | Sequence[str], lock_dir: Path, timeout: float = 600.0,
               poll: float = 0.5) -> Iterator[int]:
    """Hold the lowest free slot (an index into ``slots``; an int ``n`` means ``0..n-1``).

    Raises:
        MaskpipeError: no slot became free within ``timeout`` seconds (more GPU jobs than GPUs:
            run Snakemake with ``--resources gpu=N`` for N GPUs).
    """
    names = [str(i) for i in range(slots)] if isinstance(slots, int) else list(slots)
    lock_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    while True:
        for slot, name in enumerate(names):
            f = open(lock_dir / f"gpu{name}.lock", "w")  # noqa: SIM115 (held for the block)
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                continue
            try:
                yield slot
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
                f.close()
            return
        if time.monotonic() > deadline:
            raise MaskpipeError(f"all {len(names)} GPU(s) stayed busy for {timeout:.0f} s; "
                                "limit concurrent GPU jobs with --resources gpu=N")
        time.sleep(poll)


def _use(device: torch.device) -> None:
    # Make the claimed GPU the current one: pin_memory's thread and the caching allocator use
    # the current device, which would otherwise open a context on GPU 0 in every job.
    if device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.set_device(device)


@contextlib.contextmanager
def claim_device(setting: str, lock_dir: Path | None = None, device_count: int | None = None,
                 env: Mapping[str, str] | None = None) -> Iterator[torch.device]:
    """The device a job should use: a claimed GPU of several visible, the only GPU, or the CPU.

    ``device_count`` and ``env`` exist so tests can simulate a multi-GPU machine on CPU.
    """
    env = os.environ if env is None else env
    device = resolve_device(setting)
    count = torch.cuda.device_count() if device_count is None else device_count
    if device.type != "cuda":
        yield device
        return
    if count <= 1:  # one visible GPU: the machine's only one, or the one a scheduler chose
        device = torch.device("cuda", 0)
        _use(device)
        yield device
        return
    ids = device_ids(count, env)
    with claim_slot(ids, lock_dir or default_lock_dir(env)) as slot:
        device = torch.device("cuda", slot)
        log.info("using GPU %d of %d visible (id %s)", slot, count, ids[slot])
        _use(device)
        yield device
