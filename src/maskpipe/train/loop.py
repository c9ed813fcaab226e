"""Train one model on one fold; keep the checkpoint with the best validation macro F1.

:func:`train_fold` reads as its steps: build (data, model, loss, optimizer, schedule; see
:mod:`maskpipe.train.build`), then per epoch fit and evaluate, then write. Every technique is
chosen in the model's config section and built by the library that has it: timm (model,
optimizer, schedules, Mixup/CutMix, EMA), torch (schedules, AMP, compile), albumentations
(augmentation), madgrad. A killed job resumes from its last finished epoch.
"""

from __future__ import annotations

import copy
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from maskpipe.classes import NUM_CLASSES
from maskpipe.io import save_torch, write_json
from maskpipe.metrics import head_score
from maskpipe.train.build import (Data, Parts, build_data, build_model, build_parts, external_split,
                                  pseudo_split, split_fold)
from maskpipe.train.heads import probabilities
from maskpipe.devices import resolve_workers
from maskpipe.train.resume import ResumeState, fingerprint, runtime
from maskpipe.train.weights import resolve_weights_file

log = logging.getLogger(__name__)

#: Batches between progress-bar updates (each reads the loss sum from the device: a GPU sync).
POSTFIX_EVERY = 20


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy (timm's Mixup draws from it) and torch; return a loader generator."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def set_backbone_frozen(model: nn.Module, frozen: bool) -> None:
    """Freeze (or unfreeze) every parameter outside timm's classifier head."""
    head = {id(p) for p in model.get_classifier().parameters()}
    for p in model.parameters():
        if id(p) not in head:
            p.requires_grad_(not frozen)


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device, loss_fn: nn.Module,
             autocast, head: str, channels_last: bool = False) -> tuple[float, np.ndarray]:
    """Mean loss and predicted classes: 18-class, or the task's for a single-task model."""
    model.eval()
    # Loss and predictions stay on the device until the pass ends: one GPU sync, not one a batch.
    total, n, preds = _zero(device), 0, []
    for x, y in loader:
        x, y = _to(x, device, channels_last), y.to(device, non_blocking=True)
        with autocast():
            logits = model(x)
        total += loss_fn(logits, y).double() * len(y)
        n += len(y)
        p18, tasks = probabilities(logits, head)
        preds.append((p18 if p18 is not None else tasks[head]).argmax(1))
    return total.item() / max(n, 1), torch.cat(preds).cpu().numpy()


def _zero(device: torch.device) -> torch.Tensor:
    """A loss sum on ``device``: float64, as the Python float sum it replaces (same digits)."""
    return torch.zeros((), dtype=torch.float64, device=device)


def _to(x: torch.Tensor, device: torch.device, channels_last: bool = False) -> torch.Tensor:
    # channels-last only where the model is configured for it, so `channels_last: false` converts
    # neither the model nor its inputs
    fmt = torch.channels_last if channels_last and device.type == "cuda" else torch.preserve_format
    return x.to(device, non_blocking=True, memory_format=fmt)


@dataclass(frozen=True)
class TrainJob:
    """One model trained on one fold: its files and the device it runs on.

    ``resume``: the state after every epoch is kept there, and a rerun with the same config and
    inputs continues from it (None: no resuming). ``pseudo`` (eval crops, eval crop index,
    pseudo-labels): a pseudo-label round's job, whose training rows also hold the
    pseudo-labelled eval photos (validation stays the fold's). ``external`` (external crops,
    their labels): external faces join the training rows of every fold, never its validation.
    """

    model: str
    fold: int
    crops: Path
    crop_index: Path
    labels: Path
    folds: Path
    checkpoint: Path
    metrics: Path
    tensorboard: Path
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    resume: Path | None = None
    pseudo: tuple[Path, Path, Path] | None = None
    external: tuple[Path, Path] | None = None


def train_fold(job: TrainJob, cfg: dict[str, dict], stop_after_epoch: int | None = None) -> dict:
    """Train ``job.model`` on every fold but ``job.fold``; validate on ``job.fold``.

    ``cfg``: the train step's config sections, ``train`` and ``models.MODEL``. Learns
    ``train_label`` (labels.train_age_bounds) and scores against the official ``label``. Writes
    the best checkpoint (by validation macro F1), a metrics JSON with the per-epoch history and
    the sections it was trained with, and TensorBoard scalars. ``stop_after_epoch`` simulates a
    kill (tests).
    """
    from torch.utils.tensorboard import SummaryWriter

    model_name, fold, device = job.model, job.fold, job.device
    model_cfg, train_cfg = cfg[f"models.{model_name}"], cfg["train"]
    crops, crop_index, labels, folds = job.crops, job.crop_index, job.labels, job.folds
    resume_file, pseudo, external = job.resume, job.pseudo, job.external

    where, seed = f"models.{model_name}", train_cfg["seed"] + fold
    generator = seed_everything(seed)
    # build: the split, the model (its initial weights drawn right after seeding), the data, the rest
    tr, va = split_fold(crop_index, labels, folds, fold, model_cfg, where)
    extras = fold_extras(pseudo, external, model_cfg, where)
    n_pseudo, n_external = (len(extras[k][1]) if k in extras else 0 for k in ("pseudo", "external"))
    log.info("%s fold %d: %d training%s and %d validation images on %s", model_name, fold,
             len(tr) + n_pseudo + n_external, _extra_counts(n_pseudo, n_external), len(va), device)
    model = build_model(model_cfg, device, where)
    data = build_data(crops, tr, va, model.pretrained_cfg, model_cfg,
                      resolve_workers(train_cfg["num_workers"], device.type), seed,
                      generator, device.type == "cuda", where, list(extras.values()))
    parts = build_parts(model, data, model_cfg, device, where)
    # where it runs is part of the key: a resume.pt written on the CPU starts over on CUDA, whose
    # results would differ from an uninterrupted run's
    run_on = runtime(device, parts.amp, parts.scaler.is_enabled())
    state = ResumeState(history=[], best={"val_f1": -1.0, "epoch": 0, "state": None}, epoch=0)
    key = ""
    if resume_file is not None:  # hashing GBs of crops is worth it only for a job that can resume
        # The crops themselves too: a re-crop at another crop.size keeps the index byte-identical.
        # The weights file too: a plain path keeps its name when its contents change.
        weights = ([resolve_weights_file(model_cfg["pretrained_file"], where)]
                   if model_cfg["pretrained_file"] else [])
        key = fingerprint(model_name, fold, model_cfg, train_cfg,
                          [crops, crop_index, labels, folds, *(pseudo or ()), *(external or ()), *weights],
                          run_on)
        state = ResumeState.load(resume_file, key, *_resumable(parts), run_on) or state
    # fit and evaluate, epoch by epoch
    name = f"{model_name} fold {fold}"
    writer = SummaryWriter(str(job.tensorboard))
    for row in state.history:  # a resumed run's earlier epochs, so the curves stay whole
        _log_scalars(writer, row)
    try:
        for epoch in range(state.epoch + 1, model_cfg["epochs"] + 1):
            row = run_epoch(parts, data, device, epoch, seed * 1000 + epoch, generator,
                            epoch <= model_cfg["freeze_backbone_epochs"], name)
            _log_scalars(writer, row)
            _record(state, row, parts.scored)
            if resume_file is not None:
                state.save(resume_file, key, *_resumable(parts), run_on)
            if stop_after_epoch is not None and epoch >= stop_after_epoch:
                raise KeyboardInterrupt(f"stopped after epoch {epoch}")
            if _patience_ran_out(state, epoch, model_cfg["early_stopping_patience"], name):
                break
    finally:
        writer.close()
    # write
    metrics = write_outputs(state, data, model_name, fold, model_cfg, train_cfg, parts.ema is not None,
                            len(tr) + n_pseudo + n_external, len(va), device, job.checkpoint, job.metrics,
                            n_pseudo, n_external)
    if resume_file is not None:
        resume_file.unlink(missing_ok=True)
    return metrics


def fold_extras(pseudo: tuple[Path, Path, Path] | None, external: tuple[Path, Path] | None,
                model_cfg: dict, where: str) -> dict[str, tuple[Path, Any]]:
    """The training rows a fold's own rows are joined by, by kind (``pseudo``: the round's
    pseudo-labelled eval photos, ``external``: the external faces the model takes), each as
    (crops file, rows); none of them is ever a validation row."""
    extras = {}
    if pseudo is not None:
        extras["pseudo"] = (pseudo[0], pseudo_split(pseudo[1], pseudo[2], model_cfg))
    if external is not None:
        extras["external"] = (external[0], external_split(external[1], model_cfg, where))
    return extras


def _extra_counts(n_pseudo: int, n_external: int) -> str:
    parts = [f"{n} {what}" for n, what in ((n_pseudo, "pseudo-labelled eval photos"),
                                           (n_external, "external faces")) if n]
    return f" ({' and '.join(parts)} among them)" if parts else ""


def run_epoch(parts: Parts, data: Data, device: torch.device, epoch: int, epoch_seed: int,
              generator: torch.Generator, frozen: bool, name: str) -> dict:
    """Fit one epoch, evaluate, step the schedule; the epoch's history row."""
    # The generator drives shuffling and the workers' augmentation seeds: reseeding it (and the
    # global RNGs timm's Mixup and torch draw from) per epoch makes a resumed epoch draw exactly
    # what the uninterrupted run drew.
    generator.manual_seed(epoch_seed)
    np.random.seed(epoch_seed % 2**32)
    torch.manual_seed(epoch_seed)
    data.train_tf.set_random_seed(epoch_seed)
    set_backbone_frozen(parts.model, frozen)
    lr = parts.optimizer.param_groups[0]["lr"]
    fitted = fit_epoch(parts, data, device, f"{name} epoch {epoch}")
    val_loss, pred = evaluate(parts.scored, data.val, device, parts.loss_fn, parts.autocast, parts.head,
                              parts.channels_last)
    val_f1, val_acc, per_task = head_score(parts.head, data.val_official, pred)
    parts.schedule.after_epoch(epoch, val_f1)
    row = {"epoch": epoch, "train_loss": fitted["train_loss"], "val_loss": val_loss,
           "train_f1": fitted["train_f1"], "val_f1": val_f1, "val_acc": val_acc, "lr": lr,
           "frozen_backbone": frozen, "seconds": fitted["seconds"],
           "images_per_second": fitted["images_per_second"],
           **fitted["train_tasks"], **{f"val_{k}_f1": v for k, v in per_task.items()}}
    log.info("%s epoch %d: train loss %.4f, val loss %.4f, val macro F1 %.4f, %.0f img/s",
             name, epoch, row["train_loss"], val_loss, val_f1, row["images_per_second"])
    return row


def fit_epoch(parts: Parts, data: Data, device: torch.device, desc: str) -> dict[str, Any]:
    """One pass over the training loader: forward, backward, (accumulated) optimizer steps."""
    parts.model.train()
    # The loss is summed on the device (detached) and read once an epoch: a per-batch .item()
    # would make the CPU wait for the GPU every batch. The bar shows it every POSTFIX_EVERY.
    start, seen, total = time.perf_counter(), 0, _zero(device)
    bar = tqdm(data.train, desc=desc, unit="batch", disable=None)
    parts.optimizer.zero_grad(set_to_none=True)
    train_true, train_pred = [], []
    for step, (x, y) in enumerate(bar, start=1):
        train_true.append(y % NUM_CLASSES)  # the loader's CPU labels (no hide_tasks marks): no GPU sync
        x, y = _to(x, device, parts.channels_last), y.to(device, non_blocking=True)
        if data.mixup is not None:
            x, y = data.mixup(x, y)
        with parts.autocast():
            logits = parts.forward(x)
            loss = parts.loss_fn(logits, y)
        p18, tasks = probabilities(logits.detach(), parts.head)
        train_pred.append((p18 if p18 is not None else tasks[parts.head]).argmax(1))  # to CPU once an epoch
        parts.scaler.scale(loss / parts.accumulate).backward()
        if step % parts.accumulate == 0 or step == len(data.train):
            _optimizer_step(parts)
        seen += len(x)
        total += loss.detach().double() * len(x)
        if not bar.disable and step % POSTFIX_EVERY == 0:
            bar.set_postfix(loss=f"{total.item() / seen:.3f}",
                            img_s=f"{seen / (time.perf_counter() - start):.0f}")
    train_loss = total.item() / max(seen, 1)  # waits for the GPU: the time below is all work
    seconds = time.perf_counter() - start
    # Training F1: the (augmented, possibly mixed) batches against their unmixed targets.
    train_f1, _, tasks = head_score(parts.head, torch.cat(train_true).numpy(),
                                torch.cat(train_pred).cpu().numpy())
    return {"train_loss": train_loss, "train_f1": train_f1, "seconds": round(seconds, 3),
            "images_per_second": round(seen / seconds, 1),
            "train_tasks": {f"train_{k}_f1": v for k, v in tasks.items()}}


def _optimizer_step(parts: Parts) -> None:
    parts.scaler.step(parts.optimizer)
    parts.scaler.update()
    parts.optimizer.zero_grad(set_to_none=True)
    parts.schedule.after_batch()
    if parts.ema is not None:
        parts.ema.update(parts.model)


def _resumable(parts: Parts) -> tuple:
    """What a resume file saves and restores, in ``ResumeState.save``/``load``'s order."""
    return parts.model, parts.optimizer, parts.schedule, parts.scaler, parts.ema


def _record(state: ResumeState, row: dict, scored: nn.Module) -> None:
    state.history.append(row)
    if row["val_f1"] > state.best["val_f1"]:
        state.best = {"val_f1": row["val_f1"], "epoch": row["epoch"],
                      "state": copy.deepcopy(scored.state_dict())}
    state.epoch = row["epoch"]


def _patience_ran_out(state: ResumeState, epoch: int, patience: int | None, name: str) -> bool:
    if patience is None or epoch - state.best["epoch"] < patience:
        return False
    log.info("%s: no better validation macro F1 for %d epochs; stopping early", name, patience)
    return True


def write_outputs(state: ResumeState, data: Data, model_name: str, fold: int, model_cfg: dict,
                  train_cfg: dict, ema: bool, n_train: int, n_val: int, device: torch.device,
                  out_checkpoint: Path, out_metrics: Path, n_pseudo: int = 0, n_external: int = 0) -> dict:
    """Write the best checkpoint, then the metrics JSON that describes it; return the metrics."""
    where = f"models.{model_name}"
    checkpoint = {
        "state_dict": state.best["state"], "arch": model_cfg["arch"], "head": model_cfg["head"],
        "image_size": list(data.size), "mean": list(data.mean), "std": list(data.std),
        "preprocess": model_cfg["preprocess"], "epoch": state.best["epoch"],
        "val_f1": state.best["val_f1"], "model": model_name, "fold": fold, "ema": ema,
        "for_mask": model_cfg["for_mask"],
    }
    # The metrics file is written last: present, it describes the checkpoint beside it (a job
    # killed between the two leaves no old metrics next to a new checkpoint).
    Path(out_metrics).unlink(missing_ok=True)
    save_torch(checkpoint, out_checkpoint)
    metrics = {"model": model_name, "fold": fold, "arch": model_cfg["arch"],
               "best_epoch": state.best["epoch"], "best_val_f1": state.best["val_f1"],
               "n_train": n_train, "n_pseudo": n_pseudo, "n_external": n_external, "n_val": n_val, "device": device.type,
               "history": state.history, "config": {"train": train_cfg, where: model_cfg}}
    write_json(metrics, out_metrics)
    log.info("%s fold %d: best validation macro F1 %.4f at epoch %d",
             model_name, fold, state.best["val_f1"], state.best["epoch"])
    return metrics


def _log_scalars(writer, row: dict) -> None:
    for name, value in row.items():
        if name != "epoch" and isinstance(value, int | float) and not isinstance(value, bool):
            writer.add_scalar(name, value, row["epoch"])
