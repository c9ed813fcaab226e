"""Build what one model x fold trains with, from its config section: data, model, and the
training parts (loss, optimizer, schedule, AMP scaler, EMA), each by name through its factory.

Every builder takes the values it needs, never the whole config; ``where`` is the config path
(``models.NAME``) named in errors.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader

from maskpipe.classes import MASK_STATES, NUM_CLASSES, decode
from maskpipe.config import as_hw
from maskpipe.data.external import LABEL_COLUMNS
from maskpipe.io import MaskpipeError, read_csv
from maskpipe.train.augment import balanced_sampler, build_transforms, make_mixup, reseed_worker
from maskpipe.train.data import CropDataset, join_split, pseudo_rows
from maskpipe.train.heads import HeadLoss, head_tasks, hide_tasks
from maskpipe.train.model import create_model
from maskpipe.train.optim import Schedule, make_optimizer, make_schedule

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Data:
    """The fold's loaders and what scoring and reseeding need besides them."""

    train: DataLoader
    val: DataLoader
    train_tf: Any  # the training transforms, reseeded every epoch
    mixup: Any  # timm's Mixup or None
    train_y: np.ndarray  # training labels (train_label)
    val_official: np.ndarray  # validation images' official labels, which scoring uses
    size: tuple[int, int]
    mean: tuple
    std: tuple
    partial: bool = False  # some training rows leave tasks unknown (hide_tasks): HeadLoss skips them


@dataclass
class Parts:
    """Everything that learns or steers learning; ``ResumeState`` saves and restores these."""

    model: nn.Module
    forward: nn.Module  # ``model`` or its torch.compile wrapper
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    loss_fn: nn.Module
    scaler: torch.amp.GradScaler
    ema: Any  # timm's ModelEmaV3 or None
    amp: torch.dtype | None
    head: str
    accumulate: int
    channels_last: bool  # inputs go channels-last (CUDA only), like the model, never one without the other

    def autocast(self) -> contextlib.AbstractContextManager:
        """CUDA autocast at the configured dtype, or nothing."""
        if self.amp is None:
            return torch.autocast("cpu", enabled=False)
        return torch.autocast("cuda", dtype=self.amp)

    @property
    def scored(self) -> nn.Module:
        """The weights validation scores and the checkpoint keeps: the EMA's, if any."""
        return self.ema.module if self.ema is not None else self.model


def split_fold(crop_index: Path, labels: Path, folds: Path, fold: int, model_cfg: dict,
               where: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training rows, validation rows) of ``fold``; an age model for one mask state sees only it."""
    table = join_split(crop_index, labels, folds)
    if model_cfg["for_mask"] is not None:
        if model_cfg["head"] != "age":
            raise MaskpipeError(f"{where}.for_mask: only an age model (head: age) trains per mask state")
        table = table[table["mask"] == MASK_STATES.index(model_cfg["for_mask"])]
    tr, va = table[table["fold"] != fold], table[table["fold"] == fold]
    if tr.empty or va.empty:
        raise MaskpipeError(f"fold {fold}: no {'training' if tr.empty else 'validation'} images")
    return tr, va


def pseudo_split(eval_index: Path, pseudo_labels: Path, model_cfg: dict) -> pd.DataFrame:
    """The pseudo-labelled eval photos a model trains on besides its fold's training rows
    (an age model for one mask state: those whose label has that state). They never join a
    validation fold: eval photos have no fold."""
    rows = pseudo_rows(eval_index, pseudo_labels)
    if model_cfg["for_mask"] is not None:
        rows = rows[decode(rows["label"].to_numpy())[0] == MASK_STATES.index(model_cfg["for_mask"])]
    return rows


def external_split(external_labels: Path, model_cfg: dict, where: str) -> pd.DataFrame:
    """The external faces a model trains on besides its fold's rows: ``row``, ``train_label``
    and ``target`` (the label with the tasks it does not train them for marked unknown,
    :func:`maskpipe.train.heads.hide_tasks`). Empty when ``external_tasks`` shares no task with
    the head; an age model of one mask state (``for_mask``) takes the faces in that state. They
    never join a validation fold: they have no fold.

    Raises:
        MaskpipeError: a single 18-class head given some tasks only (its one loss cannot leave
            a task out), or CutMix/MixUp with tasks left out (a mixed pair's unknown task).
    """
    rows = read_csv(external_labels, required=LABEL_COLUMNS, dtype={"key": str})
    learns = head_tasks(model_cfg["head"])
    chosen = model_cfg["external_tasks"]
    used = learns if chosen is None else tuple(t for t in learns if t in chosen)
    if model_cfg["head"] == "single" and used not in ((), learns):
        raise MaskpipeError(f"{where}.external_tasks: a single 18-class head learns the three tasks in "
                            f"one loss: give all three or [] (or use head: multitask), not {list(chosen)}")
    if model_cfg["for_mask"] is not None:  # an age model of one mask state: its photos only
        rows = rows[rows["mask"] == MASK_STATES.index(model_cfg["for_mask"])]
    if not used:
        rows = rows.iloc[:0]
    hidden = tuple(t for t in learns if t not in used)
    if hidden and model_cfg["mixup"]["prob"] > 0:
        raise MaskpipeError(f"{where}.external_tasks: CutMix/MixUp (mixup.prob > 0) cannot mix a face "
                            f"whose {', '.join(hidden)} is unknown; give every task the head learns")
    return rows.assign(target=hide_tasks(rows["train_label"].to_numpy(), hidden))


def build_model(model_cfg: dict, device: torch.device, where: str) -> nn.Module:
    """The timm model with its head, on ``device`` (channels-last on CUDA if configured)."""
    model = create_model(model_cfg["arch"], model_cfg["pretrained"], model_cfg["pretrained_file"],
                         head=model_cfg["head"], where=where)
    model.to(device)
    if device.type == "cuda" and model_cfg["channels_last"]:
        model.to(memory_format=torch.channels_last)
    return model


def build_data(crops: Path, tr: pd.DataFrame, va: pd.DataFrame, pretrained_cfg: dict,
               model_cfg: dict, num_workers: int, seed: int, generator: torch.Generator,
               cuda: bool, where: str, extras: Sequence[tuple[Path, pd.DataFrame]] = ()) -> Data:
    """Datasets, transforms, sampler, CutMix/MixUp and the two loaders. ``extras``: more
    training rows (``row``, ``train_label``, and ``target`` where some tasks are unknown) from
    other crops files (pseudo-labelled eval photos, external faces)."""
    mean, std = pretrained_cfg.get("mean"), pretrained_cfg.get("std")
    size, preprocess = as_hw(model_cfg["image_size"]), model_cfg["preprocess"]
    train_tf = build_transforms(size, mean, std, preprocess, model_cfg["augment"], seed, where)
    val_tf = build_transforms(size, mean, std, preprocess, None, None, where)
    train_y = tr["train_label"].to_numpy()
    train_ds = CropDataset(crops, tr["row"].to_numpy(), train_y, train_tf)
    partial = False
    for path, rows in extras:
        if not len(rows):
            continue
        target = rows["target"] if "target" in rows else rows["train_label"]
        more = CropDataset(path, rows["row"].to_numpy(), target.to_numpy(), train_tf)
        train_ds = ConcatDataset([train_ds, more])  # indices run on from the fold's rows, as train_y
        train_y = np.concatenate([train_y, rows["train_label"].to_numpy()])
        partial = partial or bool((more.labels >= NUM_CLASSES).any())
    val_ds = CropDataset(crops, va["row"].to_numpy(), va["train_label"].to_numpy(), val_tf)
    bs = model_cfg["batch_size"]
    mixup = make_mixup(model_cfg["mixup"], NUM_CLASSES)
    if mixup is not None and bs % 2:
        raise MaskpipeError(f"{where}.batch_size: CutMix/MixUp needs an even batch, not {bs}")
    sampler = balanced_sampler(train_y, generator) if model_cfg["sampler"] == "balanced" else None
    # Workers are not persistent: new ones each epoch take their augmentation seeds from the
    # epoch's generator state, which is what makes a resumed epoch equal the uninterrupted one.
    loader_kw = dict(num_workers=num_workers, pin_memory=cuda, worker_init_fn=reseed_worker)
    train_dl = DataLoader(train_ds, batch_size=bs, shuffle=sampler is None, sampler=sampler,
                          generator=generator, drop_last=len(train_ds) > bs or mixup is not None,
                          **loader_kw)
    if len(train_dl) == 0:
        raise MaskpipeError(f"{where}.batch_size {bs} exceeds the {len(train_ds)} training images")
    val_dl = DataLoader(val_ds, batch_size=bs * 2, **loader_kw)
    return Data(train_dl, val_dl, train_tf, mixup, train_y, va["label"].to_numpy(), size,
                tuple(mean), tuple(std), partial)


def build_parts(model: nn.Module, data: Data, model_cfg: dict, device: torch.device,
                where: str) -> Parts:
    """Loss, optimizer, schedule, AMP scaler, EMA and the (compiled) forward of ``model``."""
    accumulate = model_cfg["accumulate"]
    steps_per_epoch = -(-len(data.train) // accumulate)
    optimizer = make_optimizer(model, model_cfg["optimizer"], f"{where}.optimizer")
    schedule = make_schedule(optimizer, model_cfg["scheduler"], model_cfg["epochs"], steps_per_epoch,
                             f"{where}.scheduler")
    counts = np.bincount(data.train_y, minlength=NUM_CLASSES)
    loss_fn = HeadLoss(model_cfg["head"], model_cfg["loss"], counts, model_cfg["task_weights"],
                       f"{where}.loss", partial=data.partial).to(device)
    amp = AMP_DTYPES.get(model_cfg["amp"]) if device.type == "cuda" else None
    scaler = torch.amp.GradScaler("cuda", enabled=amp is torch.float16)
    ema = None
    if model_cfg["ema_decay"] is not None:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=model_cfg["ema_decay"])
    forward = torch.compile(model) if model_cfg["compile"] else model
    return Parts(model, forward, optimizer, schedule, loss_fn, scaler, ema, amp, model_cfg["head"],
                 accumulate, model_cfg["channels_last"])
