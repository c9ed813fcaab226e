"""The state a killed training job resumes from: written after every finished epoch.

The file lives beside the checkpoint but is not a declared output, so neither Snakemake nor DVC
deletes it before rerunning the job. It is used only if the job's config sections and input
files are exactly the ones it was written with (a fingerprint), and loaded with
``weights_only=True``; an unreadable or stale file is ignored with a log line, never trusted.

The fingerprint also holds where the job runs (device type, AMP dtype, whether a GradScaler is
on): a file written on the CPU holds no scaler state and CPU-rounded epochs, so a rerun on CUDA
starts over, saying why, instead of failing on the missing scaler state on every rerun.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from maskpipe.io import MaskpipeError, load_torch, save_torch, sha256_file

log = logging.getLogger(__name__)


def runtime(device: torch.device, amp: torch.dtype | None, scaler_enabled: bool) -> dict:
    """Where a job runs, as the fingerprint records it: ``{"device": "cuda", "amp": "bfloat16", ...}``."""
    return {"device": device.type, "amp": str(amp).removeprefix("torch.") if amp else "none",
            "grad_scaler": bool(scaler_enabled)}


def fingerprint(model_name: str, fold: int, model_cfg: dict, train_cfg: dict, files: list[Path],
                where: dict | None = None) -> str:
    """What a resume file must match: the config a job reads, its inputs' contents and
    ``where`` it runs (:func:`runtime`)."""
    h = hashlib.sha256(json.dumps([model_name, fold, model_cfg, train_cfg, where or {}],
                                  sort_keys=True).encode())
    for f in files:
        h.update(sha256_file(f).encode())
    return h.hexdigest()


def _describe(where: dict | None) -> str:
    if not where:
        return "an unknown device"
    return f"{where['device']} (amp {where['amp']}, grad scaler {'on' if where['grad_scaler'] else 'off'})"


@dataclass
class ResumeState:
    """Progress of one training job: finished epochs, their history and the best weights."""

    history: list[dict]
    best: dict
    epoch: int

    def save(self, path: Path, key: str, model, optimizer, schedule, scaler, ema,
             where: dict | None = None) -> None:
        blob = {"key": key, "runtime": where, "epoch": self.epoch, "history": self.history, "best": self.best,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(), "scaler": scaler.state_dict(),
                "ema": ema.state_dict() if ema is not None else None,
                "rng": {"torch": torch.get_rng_state()}}
        save_torch(blob, path)

    @classmethod
    def load(cls, path: Path, key: str, model, optimizer, schedule, scaler, ema,
             where: dict | None = None) -> ResumeState | None:
        """Restore every object from ``path`` and return the progress, or None to start over.

        ``where`` (:func:`runtime`) only words the log line when the file came from elsewhere.
        """
        if not path.is_file():
            return None
        try:
            blob = load_torch(path)
        except MaskpipeError as e:  # an unreadable or refused file means: start over
            log.warning("resume file ignored: %s", e)
            return None
        if blob.get("key") != key:
            if where is not None and blob.get("runtime") != where:
                log.warning("%s: written on %s, this run is on %s; starting over", path,
                            _describe(blob.get("runtime")), _describe(where))
            else:
                log.info("%s: written for another config or other inputs; starting over", path)
            return None
        model.load_state_dict(blob["model"])
        optimizer.load_state_dict(blob["optimizer"])
        schedule.load_state_dict(blob["schedule"])
        if blob["scaler"]:
            scaler.load_state_dict(blob["scaler"])
        elif scaler.is_enabled():  # a disabled scaler saves {}, which an enabled one refuses
            log.warning("%s: no grad scaler state saved; the scale starts afresh", path)
        if ema is not None and blob["ema"] is not None:
            ema.load_state_dict(blob["ema"])
        torch.set_rng_state(blob["rng"]["torch"])
        log.info("%s: resuming after epoch %d", path, blob["epoch"])
        return cls(history=blob["history"], best=blob["best"], epoch=blob["epoch"])
