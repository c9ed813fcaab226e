"""Give each concurrent GPU job on one machine its own GPU.

Snakemake's `--resources gpu=N` only counts: it lets N GPU jobs run at once but tells none of
them which device to use, so all would pile onto cuda:0. Each job here claims the first free
device slot by taking an exclusive, non-blocking ``flock`` on ``<lock_dir>/gpu<i>.lock``. The
kernel releases the lock when the process exits, even on ``kill -9``, so a crashed job never
leaves a device claimed. Where a scheduler already chose (``CUDA_VISIBLE_DEVICES`` set, as Slurm
does), the job uses the first visible device and claims nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from maskpipe.io import MaskpipeError

log = logging.getLogger(__name__)


def resolve_device(device: str) -> torch.device:
    """``auto`` picks CUDA when present, else CPU; asking for CUDA without one is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise MaskpipeError("device: cuda was asked for but torch sees no CUDA device")
    return torch.device(device)


def default_lock_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"maskpipe-gpus-{os.getuid()}"


@contextlib.contextmanager
def claim_slot(n_slots: int, lock_dir: Path, timeout: float = 600.0, poll: float = 0.5) -> Iterator[int]:
    """Hold the lowest free slot in ``range(n_slots)`` until the block ends.

    Raises:
        MaskpipeError: no slot became free within ``timeout`` seconds (more GPU jobs than GPUs:
            run Snakemake with ``--resources gpu=N`` for N GPUs).
    """
    lock_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    while True:
        for slot in range(n_slots):
            f = open(lock_dir / f"gpu{slot}.lock", "w")  # noqa: SIM115 (held for the block)
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
            raise MaskpipeError(f"all {n_slots} GPU(s) stayed busy for {timeout:.0f} s; "
                                "limit concurrent GPU jobs with --resources gpu=N")
        time.sleep(poll)


@contextlib.contextmanager
def claim_device(setting: str, lock_dir: Path | None = None,
                 device_count: int | None = None) -> Iterator[torch.device]:
    """The device a job should use: a claimed GPU of several, the only GPU, or the CPU.

    ``device_count`` exists so tests can simulate a multi-GPU machine on CPU.
    """
    device = resolve_device(setting)
    count = torch.cuda.device_count() if device_count is None else device_count
    if device.type != "cuda" or count <= 1 or os.environ.get("CUDA_VISIBLE_DEVICES"):
        yield device
        return
    with claim_slot(count, lock_dir or default_lock_dir()) as slot:
        log.info("using GPU %d of %d", slot, count)
        yield torch.device("cuda", slot)
