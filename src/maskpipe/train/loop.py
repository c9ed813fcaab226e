"""Train one model on one fold; keep the checkpoint with the best validation macro F1.

Every technique is chosen in the model's config section and built by the library that has it:
timm (model, optimizer, cosine schedule, Mixup/CutMix, EMA), torch (schedules, AMP, compile),
albumentations (augmentation), madgrad. A killed job resumes from its last finished epoch.
"""

from __future__ import annotations

import copy
import logging
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from maskpipe.classes import NUM_CLASSES
from maskpipe.config import as_hw
from maskpipe.io import MaskpipeError, save_torch, write_json
from maskpipe.metrics import head_score
from maskpipe.train.augment import balanced_sampler, build_transforms, make_mixup, reseed_worker
from maskpipe.train.data import CropDataset, join_split
from maskpipe.train.devices import resolve_workers
from maskpipe.train.heads import MASK_STATES, HeadLoss, probabilities
from maskpipe.train.model import create_model
from maskpipe.train.optim import make_optimizer, make_schedule
from maskpipe.train.resume import ResumeState, fingerprint, runtime

log = logging.getLogger(__name__)

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


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
    total, n, preds = 0.0, 0, []
    for x, y in loader:
        x, y = _to(x, device, channels_last), y.to(device, non_blocking=True)
        with autocast():
            logits = model(x)
        total += loss_fn(logits, y).item() * len(y)
        n += len(y)
        p18, tasks = probabilities(logits, head)
        preds.append((p18 if p18 is not None else tasks[head]).argmax(1).cpu())
    return total / max(n, 1), torch.cat(preds).numpy()


def _to(x: torch.Tensor, device: torch.device, channels_last: bool = False) -> torch.Tensor:
    # issue 15: channels-last only where the model is configured for it (was: always on CUDA)
    fmt = torch.channels_last if channels_last and device.type == "cuda" else torch.preserve_format
    return x.to(device, non_blocking=True, memory_format=fmt)


def train_fold(
    crops: Path,
    crop_index: Path,
    labels: Path,
    folds: Path,
    fold: int,
    model_name: str,
    model_cfg: dict,
    train_cfg: dict,
    device: torch.device,
    out_checkpoint: Path,
    out_metrics: Path,
    tensorboard_dir: Path,
    resume_file: Path | None = None,
    stop_after_epoch: int | None = None,
) -> dict:
    """Train ``model_cfg`` on every fold but ``fold``; validate on ``fold``.

    Learns ``train_label`` (labels.train_age_bounds) and scores against the official ``label``.
    Writes the best checkpoint (by validation macro F1), a metrics JSON with the per-epoch
    history and the sections it was trained with, and TensorBoard scalars. With
    ``resume_file``, the state after every epoch is kept there and a rerun with the same
    config and inputs continues from it. ``stop_after_epoch`` simulates a kill (tests).
    """
    from torch.utils.tensorboard import SummaryWriter

    where = f"models.{model_name}"
    seed = train_cfg["seed"] + fold
    generator = seed_everything(seed)
    table = join_split(crop_index, labels, folds)
    if model_cfg["for_mask"] is not None:
        if model_cfg["head"] != "age":
            raise MaskpipeError(f"{where}.for_mask: only an age model (head: age) trains per mask state")
        # An age model for one mask state learns and is validated on those photos only.
        table = table[table["mask"] == MASK_STATES.index(model_cfg["for_mask"])]
    tr, va = table[table["fold"] != fold], table[table["fold"] == fold]
    if tr.empty or va.empty:
        raise MaskpipeError(f"fold {fold}: no {'training' if tr.empty else 'validation'} images")
    log.info("%s fold %d: %d training and %d validation images on %s",
             model_name, fold, len(tr), len(va), device)

    head = model_cfg["head"]
    model = create_model(model_cfg["arch"], model_cfg["pretrained"], model_cfg["pretrained_file"],
                         head=head, where=where)
    mean, std = model.pretrained_cfg.get("mean"), model.pretrained_cfg.get("std")
    size = as_hw(model_cfg["image_size"])
    cuda = device.type == "cuda"
    model.to(device)
    if cuda and model_cfg["channels_last"]:
        model.to(memory_format=torch.channels_last)

    preprocess = model_cfg["preprocess"]
    train_tf = build_transforms(size, mean, std, preprocess, model_cfg["augment"], seed, where)
    val_tf = build_transforms(size, mean, std, preprocess, None, None, where)
    train_y = tr["train_label"].to_numpy()
    train_ds = CropDataset(crops, tr["row"].to_numpy(), train_y, train_tf)
    val_ds = CropDataset(crops, va["row"].to_numpy(), va["train_label"].to_numpy(), val_tf)
    val_official = va["label"].to_numpy()

    bs, workers = model_cfg["batch_size"], resolve_workers(train_cfg["num_workers"])  # issue 15: auto
    mixup = make_mixup(model_cfg["mixup"], NUM_CLASSES)
    if mixup is not None and bs % 2:
        raise MaskpipeError(f"{where}.batch_size: CutMix/MixUp needs an even batch, not {bs}")
    sampler = balanced_sampler(train_y, generator) if model_cfg["sampler"] == "balanced" else None
    # Workers are not persistent: new ones each epoch take their augmentation seeds from the
    # epoch's generator state, which is what makes a resumed epoch equal the uninterrupted one.
    loader_kw = dict(num_workers=workers, pin_memory=cuda, worker_init_fn=reseed_worker)
    train_dl = DataLoader(train_ds, batch_size=bs, shuffle=sampler is None, sampler=sampler,
                          generator=generator, drop_last=len(train_ds) > bs or mixup is not None,
                          **loader_kw)
    val_dl = DataLoader(val_ds, batch_size=bs * 2, **loader_kw)
    if len(train_dl) == 0:
        raise MaskpipeError(f"{where}.batch_size {bs} exceeds the {len(train_ds)} training images")

    accumulate = model_cfg["accumulate"]
    steps_per_epoch = -(-len(train_dl) // accumulate)
    optimizer = make_optimizer(model, model_cfg["optimizer"], f"{where}.optimizer")
    schedule = make_schedule(optimizer, model_cfg["scheduler"], model_cfg["epochs"], steps_per_epoch,
                             f"{where}.scheduler")
    counts = np.bincount(train_y, minlength=NUM_CLASSES)
    loss_fn = HeadLoss(head, model_cfg["loss"], counts, model_cfg["task_weights"], f"{where}.loss").to(device)
    amp = AMP_DTYPES.get(model_cfg["amp"]) if cuda else None
    scaler = torch.amp.GradScaler("cuda", enabled=amp is torch.float16)

    def autocast():
        return torch.autocast("cuda", dtype=amp) if amp is not None else torch.autocast("cpu", enabled=False)

    ema = None
    if model_cfg["ema_decay"] is not None:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=model_cfg["ema_decay"])
    forward = torch.compile(model) if model_cfg["compile"] else model

    state = ResumeState(history=[], best={"val_f1": -1.0, "epoch": 0, "state": None}, epoch=0)
    run_on = runtime(device, amp, scaler.is_enabled())  # issue 15: a CPU resume.pt on CUDA restarts
    key = fingerprint(model_name, fold, model_cfg, train_cfg, [crop_index, labels, folds], run_on)
    if resume_file is not None:
        state = ResumeState.load(resume_file, key, model, optimizer, schedule, scaler, ema, run_on) or state
    writer = SummaryWriter(str(tensorboard_dir))
    for row in state.history:  # a resumed run's earlier epochs, so the curves stay whole
        _log_scalars(writer, row)

    patience = model_cfg["early_stopping_patience"]
    for epoch in range(state.epoch + 1, model_cfg["epochs"] + 1):
        # The generator drives shuffling and the workers' augmentation seeds: reseeding it per
        # epoch makes a resumed epoch draw exactly what the uninterrupted run drew.
        epoch_seed = seed * 1000 + epoch
        generator.manual_seed(epoch_seed)
        np.random.seed(epoch_seed % 2**32)
        torch.manual_seed(epoch_seed)
        train_tf.set_random_seed(epoch_seed)
        frozen = epoch <= model_cfg["freeze_backbone_epochs"]
        set_backbone_frozen(model, frozen)
        model.train()
        start, seen, total = time.perf_counter(), 0, 0.0
        lr = optimizer.param_groups[0]["lr"]
        bar = tqdm(train_dl, desc=f"{model_name} fold {fold} epoch {epoch}", unit="batch", disable=None)
        optimizer.zero_grad(set_to_none=True)
        train_true, train_pred = [], []
        for step, (x, y) in enumerate(bar, start=1):
            train_true.append(y)  # issue 15: the loader's CPU labels (no GPU sync per batch)
            x, y = _to(x, device, model_cfg["channels_last"]), y.to(device, non_blocking=True)
            if mixup is not None:
                x, y = mixup(x, y)
            with autocast():
                logits = forward(x)
                loss = loss_fn(logits, y)
            p18, tasks = probabilities(logits.detach(), head)
            train_pred.append((p18 if p18 is not None else tasks[head]).argmax(1))  # to CPU once an epoch
            scaler.scale(loss / accumulate).backward()
            if step % accumulate == 0 or step == len(train_dl):
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                schedule.after_batch()
                if ema is not None:
                    ema.update(model)
            seen += len(x)
            total += loss.item() * len(x)
            bar.set_postfix(loss=f"{loss.item():.3f}", img_s=f"{seen / (time.perf_counter() - start):.0f}")
        seconds = time.perf_counter() - start
        scored = ema.module if ema is not None else model
        val_loss, pred = evaluate(scored, val_dl, device, loss_fn, autocast, head,
                                  model_cfg["channels_last"])
        val_f1, val_acc, per_task = head_score(head, val_official, pred)
        # Training F1: the (augmented, possibly mixed) batches against their unmixed targets.
        train_f1, _, train_tasks = head_score(head, torch.cat(train_true).numpy(), torch.cat(train_pred).cpu().numpy())
        row = {"epoch": epoch, "train_loss": total / max(seen, 1), "val_loss": val_loss,
               "train_f1": train_f1, "val_f1": val_f1, "val_acc": val_acc, "lr": lr,
               "frozen_backbone": frozen, "seconds": round(seconds, 3),
               "images_per_second": round(seen / seconds, 1),
               **{f"train_{k}_f1": v for k, v in train_tasks.items()},
               **{f"val_{k}_f1": v for k, v in per_task.items()}}
        schedule.after_epoch(epoch, val_f1)
        state.history.append(row)
        _log_scalars(writer, row)
        log.info("%s fold %d epoch %d: train loss %.4f, val loss %.4f, val macro F1 %.4f, %.0f img/s",
                 model_name, fold, epoch, row["train_loss"], val_loss, val_f1, row["images_per_second"])
        if val_f1 > state.best["val_f1"]:
            state.best = {"val_f1": val_f1, "epoch": epoch,
                          "state": copy.deepcopy(scored.state_dict())}
        state.epoch = epoch
        if resume_file is not None:
            state.save(resume_file, key, model, optimizer, schedule, scaler, ema, run_on)
        if stop_after_epoch is not None and epoch >= stop_after_epoch:
            writer.close()
            raise KeyboardInterrupt(f"stopped after epoch {epoch}")
        if patience is not None and epoch - state.best["epoch"] >= patience:
            log.info("%s fold %d: no better validation macro F1 for %d epochs; stopping early",
                     model_name, fold, patience)
            break
    writer.close()

    config = {"train": train_cfg, where: model_cfg}
    checkpoint = {
        "state_dict": state.best["state"], "arch": model_cfg["arch"], "head": head,
        "image_size": list(size), "mean": list(mean), "std": list(std), "preprocess": preprocess,
        "epoch": state.best["epoch"], "val_f1": state.best["val_f1"], "model": model_name,
        "fold": fold, "ema": ema is not None, "for_mask": model_cfg["for_mask"],
    }
    # The metrics file is written last: present, it describes the checkpoint beside it (a job
    # killed between the two leaves no old metrics next to a new checkpoint).
    Path(out_metrics).unlink(missing_ok=True)
    save_torch(checkpoint, out_checkpoint)
    metrics = {"model": model_name, "fold": fold, "arch": model_cfg["arch"],
               "best_epoch": state.best["epoch"], "best_val_f1": state.best["val_f1"],
               "n_train": len(tr), "n_val": len(va), "device": device.type,
               "history": state.history, "config": config}
    write_json(metrics, out_metrics)
    if resume_file is not None:
        resume_file.unlink(missing_ok=True)
    log.info("%s fold %d: best validation macro F1 %.4f at epoch %d",
             model_name, fold, state.best["val_f1"], state.best["epoch"])
    return metrics


def _log_scalars(writer, row: dict) -> None:
    for name, value in row.items():
        if name != "epoch" and isinstance(value, int | float) and not isinstance(value, bool):
            writer.add_scalar(name, value, row["epoch"])
