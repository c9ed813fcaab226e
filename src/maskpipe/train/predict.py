"""Prediction: out-of-fold and test probabilities of one model × fold, with TTA.

Each row holds the 18-class probabilities ``p00..p17`` (empty for a single-task model) and the
per-task probabilities ``mask0..2``, ``gender0..1``, ``age0..2`` (a task model fills its own).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from maskpipe.classes import NUM_CLASSES, PROB_COLUMNS, TASK_COLUMNS
from maskpipe.io import load_torch, read_csv, write_csv
from maskpipe.train.augment import build_transforms
from maskpipe.train.data import CropDataset, join_split
from maskpipe.devices import resolve_workers
from maskpipe.train.heads import TASKS, probabilities
from maskpipe.train.model import create_model

log = logging.getLogger(__name__)


def load_checkpoint(path: Path, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """Rebuild the model of a checkpoint (``weights_only=True``: no code runs from the file)."""
    ckpt = load_torch(path)
    model = create_model(ckpt["arch"], pretrained=False, head=ckpt.get("head", "single"))
    model.load_state_dict(ckpt["state_dict"])
    return model.to(device).eval(), ckpt


def tta_label(tta: dict) -> str:
    """A short name of a TTA setting, e.g. ``none``, ``hflip``, ``hflip+zoom0.9``."""
    parts = (["hflip"] if tta["hflip"] else []) + [f"zoom{z:g}" for z in tta["zooms"]]
    return "+".join(parts) or "none"


def views(x: torch.Tensor, tta: dict) -> list[torch.Tensor]:
    """The TTA views of a normalised batch (torchvision's tensor ops); the first is the image."""
    from torchvision.transforms.v2 import functional as TF

    h, w = x.shape[2:]
    scaled = [x] + [TF.resize(TF.center_crop(x, [max(1, round(h * z)), max(1, round(w * z))]),
                              [h, w], antialias=False) for z in tta["zooms"]]
    if tta["hflip"]:
        scaled += [TF.horizontal_flip(v) for v in scaled]
    return scaled


def row_tensor(logits: torch.Tensor, head: str) -> torch.Tensor:
    """One row per image: 18-class then per-task probabilities, NaN where the head has none; a
    float32 tensor on the device of ``logits``."""
    p18, tasks = probabilities(logits, head)

    def missing(k: int) -> torch.Tensor:  # on the outputs' device: torch.cat needs one device
        return torch.full((len(logits), k), float("nan"), device=logits.device, dtype=torch.float32)

    parts = [p18 if p18 is not None else missing(NUM_CLASSES)]
    parts += [tasks[t] if t in tasks else missing(k) for t, k in TASKS.items()]
    return torch.cat([p.float() for p in parts], dim=1)


@torch.no_grad()
def predict_probs(model: torch.nn.Module, dataset: CropDataset, device: torch.device, tta: dict,
                  batch_size: int, desc: str, head: str = "single",
                  amp: torch.dtype | None = None,
                  num_workers: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(probabilities without TTA, probabilities averaged over the TTA views) as tables.

    Probabilities, not logits, are averaged. ``amp`` runs the model under autocast on CUDA.
    """
    cuda = device.type == "cuda"
    # Pinned batches let the copy below overlap the GPU's work on the previous batch.
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, pin_memory=cuda)
    columns = PROB_COLUMNS + [c for cols in TASK_COLUMNS.values() for c in cols]
    batches = []  # per batch, its views' rows on the device: copied out once, after the loop
    for x in tqdm(loader, desc=desc, unit="batch", disable=None):
        x = x.to(device, non_blocking=cuda)
        with torch.autocast("cuda", dtype=amp, enabled=True) if amp is not None and cuda \
                else contextlib.nullcontext():
            batches.append(torch.stack([row_tensor(model(v), head) for v in views(x, tta)]))
    rows = [b.cpu().numpy() for b in batches]
    plain, merged = [r[0] for r in rows], [r.mean(axis=0) for r in rows]
    empty = np.zeros((0, len(columns)))
    return (pd.DataFrame(np.concatenate(plain) if plain else empty, columns=columns),
            pd.DataFrame(np.concatenate(merged) if merged else empty, columns=columns))


def _table(keys: pd.DataFrame, probs: pd.DataFrame) -> pd.DataFrame:
    # Six decimals keep the CSV small and its bytes stable across reruns.
    return pd.concat([keys.reset_index(drop=True), probs.round(6)], axis=1)


@dataclass(frozen=True)
class PredictJob:
    """One model x fold's predictions: its checkpoint and the crops in, its out-of-fold (``oof``)
    and eval (``test``) probabilities out, and the device it runs on."""

    model: str
    fold: int
    checkpoint: Path
    train_crops: Path
    train_index: Path
    eval_crops: Path
    eval_index: Path
    labels: Path
    folds: Path
    oof: Path
    test: Path
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))


def predict_fold(job: PredictJob, cfg: dict) -> None:
    """Write OOF probabilities for the fold's validation images and test probabilities.

    ``cfg``: the ``predict`` section (``tta``, ``batch_size``, ``amp``). The OOF file holds each
    image once with TTA (``tta`` column = the setting) and, when TTA is on, once more without
    (``tta`` = ``none``), so the ensemble can show what TTA gains.
    """
    model_name, fold, device = job.model, job.fold, job.device
    tta, batch_size = cfg["tta"], cfg["batch_size"]
    model, ckpt = load_checkpoint(job.checkpoint, device)
    head = ckpt.get("head", "single")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.get("amp", "none"))
    tf = build_transforms(tuple(ckpt["image_size"]), ckpt["mean"], ckpt["std"],
                          ckpt.get("preprocess", []), None)
    label = tta_label(tta)
    # CPU: the model is the bottleneck and workers would take its cores; CUDA: feed it.
    workers = resolve_workers("auto", device.type) if device.type == "cuda" else 0
    table = join_split(job.train_index, job.labels, job.folds)
    val = table[table["fold"] == fold]
    oof_plain, oof = predict_probs(model, CropDataset(job.train_crops, val["row"].to_numpy(), None, tf),
                                   device, tta, batch_size, f"predict {model_name} fold {fold} oof",
                                   head, dtype, workers)
    eval_idx = read_csv(job.eval_index, required=["key", "row"], dtype={"key": str})
    _, test = predict_probs(model, CropDataset(job.eval_crops, eval_idx["row"].to_numpy(), None, tf),
                            device, tta, batch_size, f"predict {model_name} fold {fold} test",
                            head, dtype, workers)
    meta = dict(model=model_name, fold=fold, head=head, for_mask=ckpt.get("for_mask") or "")
    keys = val[["key", "person"]]
    parts = [_table(keys.assign(**meta, tta=label), oof)]
    if label != "none":
        parts.append(_table(keys.assign(**meta, tta="none"), oof_plain))
    write_csv(pd.concat(parts, ignore_index=True), job.oof)
    write_csv(_table(eval_idx[["key"]].assign(**meta, tta=label), test), job.test)
    log.info("%s fold %d: %d out-of-fold and %d test predictions (head %s, tta %s)",
             model_name, fold, len(val), len(eval_idx), head, label)
