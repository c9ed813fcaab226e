"""The ``predict`` step: out-of-fold and test probabilities of one model × fold, with TTA.

Each row holds the 18-class probabilities ``p00..p17`` (empty for a single-task model) and the
per-task probabilities ``mask0..2``, ``gender0..1``, ``age0..2`` (a task model fills its own).
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from maskpipe.classes import NUM_CLASSES
from maskpipe.io import MaskpipeError, read_csv, write_csv
from maskpipe.train.augment import build_transforms
from maskpipe.train.data import CropDataset, join_split
from maskpipe.train.heads import TASKS, probabilities
from maskpipe.train.model import create_model

log = logging.getLogger(__name__)

PROB_COLUMNS = [f"p{i:02d}" for i in range(NUM_CLASSES)]
TASK_COLUMNS = {t: [f"{t}{i}" for i in range(k)] for t, k in TASKS.items()}


def load_checkpoint(path: Path, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """Rebuild the model of a checkpoint (``weights_only=True``: no code runs from the file)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MaskpipeError(f"{path}: cannot load checkpoint ({first})") from e
    model = create_model(ckpt["arch"], pretrained=False, head=ckpt.get("head", "single"))
    model.load_state_dict(ckpt["state_dict"])
    return model.to(device).eval(), ckpt


@torch.no_grad()
def predict_probs(model: torch.nn.Module, dataset: CropDataset, device: torch.device, tta: str,
                  batch_size: int, desc: str, head: str = "single") -> pd.DataFrame:
    """Probabilities as a table (see the module doc); with ``tta="hflip"`` the mean over the
    image and its mirror, taken on probabilities."""
    loader = DataLoader(dataset, batch_size=batch_size)
    columns = PROB_COLUMNS + [c for cols in TASK_COLUMNS.values() for c in cols]
    out = []
    for x in tqdm(loader, desc=desc, unit="batch", disable=None):
        x = x.to(device)
        views = [x, torch.flip(x, dims=[3])] if tta == "hflip" else [x]
        rows = np.full((len(x), len(columns)), np.nan)
        for view in views:
            p18, tasks = probabilities(model(view), head)
            parts = [p18 if p18 is not None else torch.full((len(x), NUM_CLASSES), float("nan"))]
            parts += [tasks[t] if t in tasks else torch.full((len(x), k), float("nan"))
                      for t, k in TASKS.items()]
            rows = np.nan_to_num(rows) + torch.cat(parts, dim=1).cpu().numpy() / len(views)
        out.append(rows)
    return pd.DataFrame(np.concatenate(out) if out else np.zeros((0, len(columns))), columns=columns)


def _table(keys: pd.DataFrame, probs: pd.DataFrame) -> pd.DataFrame:
    # Six decimals keep the CSV small and its bytes stable across reruns.
    return pd.concat([keys.reset_index(drop=True), probs.round(6)], axis=1)


def run(checkpoint: Path, fold: int, model_name: str, train_crops: Path, train_index: Path,
        eval_crops: Path, eval_index: Path, labels: Path, folds: Path, tta: str,
        batch_size: int, device: torch.device, out_oof: Path, out_test: Path) -> None:
    """Write OOF probabilities for the fold's validation images and test probabilities."""
    model, ckpt = load_checkpoint(checkpoint, device)
    head = ckpt.get("head", "single")
    tf = build_transforms(tuple(ckpt["image_size"]), ckpt["mean"], ckpt["std"],
                          ckpt.get("preprocess", []), None)
    table = join_split(train_index, labels, folds)
    val = table[table["fold"] == fold]
    oof = predict_probs(model, CropDataset(train_crops, val["row"].to_numpy(), None, tf), device,
                        tta, batch_size, f"predict {model_name} fold {fold} oof", head)
    eval_idx = read_csv(eval_index, required=["key", "row"], dtype={"key": str})
    test = predict_probs(model, CropDataset(eval_crops, eval_idx["row"].to_numpy(), None, tf),
                         device, tta, batch_size, f"predict {model_name} fold {fold} test", head)
    for_mask = ckpt.get("for_mask") or ""
    meta = val[["key", "person"]].assign(model=model_name, fold=fold, tta=tta, head=head,
                                         for_mask=for_mask)
    write_csv(_table(meta, oof), out_oof)
    write_csv(_table(eval_idx[["key"]].assign(model=model_name, fold=fold, tta=tta, head=head,
                                              for_mask=for_mask), test), out_test)
    log.info("%s fold %d: %d out-of-fold and %d test predictions (head %s, tta %s)",
             model_name, fold, len(val), len(eval_idx), head, tta)
