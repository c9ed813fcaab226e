"""Train one model on one fold; keep the checkpoint with the best validation macro F1."""

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
from maskpipe.io import atomic_path, write_json
from maskpipe.metrics import macro_f1
from maskpipe.train.data import CropDataset, build_transforms, join_split, reseed_worker
from maskpipe.train.model import create_model

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a generator for the DataLoader's shuffling."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def make_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW through timm's factory (no decay on norms and biases); MADGRAD from its package."""
    from timm.optim import create_optimizer_v2, param_groups_weight_decay

    if name == "madgrad":
        from madgrad import MADGRAD

        return MADGRAD(param_groups_weight_decay(model, weight_decay), lr=lr)
    return create_optimizer_v2(model, opt=name, lr=lr, weight_decay=weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, epochs: int, warmup_epochs: int, lr: float):
    """timm's cosine schedule with linear warm-up, stepped once per epoch."""
    from timm.scheduler import CosineLRScheduler

    return CosineLRScheduler(optimizer, t_initial=epochs, lr_min=lr * 0.01,
                             warmup_t=min(warmup_epochs, max(epochs - 1, 0)),
                             warmup_lr_init=lr * 0.1, warmup_prefix=True)


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device, loss_fn: nn.Module):
    """Mean loss, softmax probabilities and targets over a loader."""
    model.eval()
    losses, probs, targets = [], [], []
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits = model(x)
        losses.append(loss_fn(logits, y).item() * len(y))
        probs.append(torch.softmax(logits.float(), dim=1).cpu())
        targets.append(y.cpu())
    p = torch.cat(probs).numpy()
    t = torch.cat(targets).numpy()
    return sum(losses) / max(len(t), 1), p, t


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
) -> dict:
    """Train ``model_cfg`` on every fold but ``fold``; validate on ``fold``.

    Writes the best checkpoint (by validation macro F1), a metrics JSON with the per-epoch
    history, and TensorBoard scalars. Returns the metrics.
    """
    from torch.utils.tensorboard import SummaryWriter

    seed = train_cfg["seed"] + fold
    generator = seed_everything(seed)
    table = join_split(crop_index, labels, folds)
    tr, va = table[table["fold"] != fold], table[table["fold"] == fold]
    log.info("%s fold %d: %d training and %d validation images on %s",
             model_name, fold, len(tr), len(va), device)

    model = create_model(model_cfg["arch"], model_cfg["pretrained"], model_cfg["pretrained_file"])
    mean, std = model.pretrained_cfg.get("mean"), model.pretrained_cfg.get("std")
    size = as_hw(model_cfg["image_size"])
    model.to(device)
    # Learn the training targets (labels.train_age_bounds); score against the official labels.
    train_ds = CropDataset(crops, tr["row"].to_numpy(), tr["train_label"].to_numpy(),
                           build_transforms(size, mean, std, model_cfg["augment"], seed))
    val_ds = CropDataset(crops, va["row"].to_numpy(), va["train_label"].to_numpy(),
                         build_transforms(size, mean, std, None))
    val_official = va["label"].to_numpy()
    bs, workers = model_cfg["batch_size"], train_cfg["num_workers"]
    train_dl = DataLoader(train_ds, batch_size=bs, shuffle=True, generator=generator,
                          num_workers=workers, drop_last=len(train_ds) > bs,
                          worker_init_fn=reseed_worker,
                          persistent_workers=workers > 0, pin_memory=device.type == "cuda")
    val_dl = DataLoader(val_ds, batch_size=bs * 2, num_workers=workers,
                        persistent_workers=workers > 0, pin_memory=device.type == "cuda")

    optimizer = make_optimizer(model, model_cfg["optimizer"], model_cfg["lr"], model_cfg["weight_decay"])
    scheduler = make_scheduler(optimizer, model_cfg["epochs"], model_cfg["warmup_epochs"], model_cfg["lr"])
    loss_fn = nn.CrossEntropyLoss(label_smoothing=model_cfg["label_smoothing"])
    writer = SummaryWriter(str(tensorboard_dir))
    history: list[dict] = []
    best: dict = {"val_f1": -1.0}
    for epoch in range(1, model_cfg["epochs"] + 1):
        model.train()
        start, seen, total = time.perf_counter(), 0, 0.0
        lr = optimizer.param_groups[0]["lr"]
        bar = tqdm(train_dl, desc=f"{model_name} fold {fold} epoch {epoch}", unit="batch", disable=None)
        for x, y in bar:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            seen += len(y)
            total += loss.item() * len(y)
            bar.set_postfix(loss=f"{loss.item():.3f}", img_s=f"{seen / (time.perf_counter() - start):.0f}")
        scheduler.step(epoch)
        seconds = time.perf_counter() - start
        val_loss, probs, _ = evaluate(model, val_dl, device, loss_fn)
        val_f1 = macro_f1(val_official, probs.argmax(1))
        row = {"epoch": epoch, "train_loss": total / max(seen, 1), "val_loss": val_loss,
               "val_f1": val_f1, "val_acc": float((probs.argmax(1) == val_official).mean()),
               "lr": lr, "seconds": round(seconds, 3), "images_per_second": round(seen / seconds, 1)}
        history.append(row)
        for name in ("train_loss", "val_loss", "val_f1", "val_acc", "lr"):
            writer.add_scalar(name, row[name], epoch)
        log.info("%s fold %d epoch %d: train loss %.4f, val loss %.4f, val macro F1 %.4f, %.0f img/s",
                 model_name, fold, epoch, row["train_loss"], val_loss, val_f1, row["images_per_second"])
        if val_f1 > best["val_f1"]:
            best = {"val_f1": val_f1, "epoch": epoch, "state": copy.deepcopy(model.state_dict())}
    writer.close()

    checkpoint = {
        "state_dict": best["state"], "arch": model_cfg["arch"], "num_classes": NUM_CLASSES,
        "image_size": list(size), "mean": list(mean), "std": list(std),
        "epoch": best["epoch"], "val_f1": best["val_f1"], "model": model_name, "fold": fold,
    }
    with atomic_path(out_checkpoint) as tmp:
        torch.save(checkpoint, tmp)
    metrics = {"model": model_name, "fold": fold, "arch": model_cfg["arch"],
               "best_epoch": best["epoch"], "best_val_f1": best["val_f1"], "n_train": len(tr),
               "n_val": len(va), "device": device.type, "history": history}
    write_json(metrics, out_metrics)
    log.info("%s fold %d: best validation macro F1 %.4f at epoch %d",
             model_name, fold, best["val_f1"], best["epoch"])
    return metrics
