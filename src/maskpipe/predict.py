"""The ``predict`` step: out-of-fold and test probabilities of one model × fold, with TTA."""

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
from maskpipe.train.model import create_model

log = logging.getLogger(__name__)

PROB_COLUMNS = [f"p{i:02d}" for i in range(NUM_CLASSES)]


def load_checkpoint(path: Path, device: torch.device) -> tuple[torch.nn.Module, dict]:
    """Rebuild the model of a checkpoint (``weights_only=True``: no code runs from the file)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MaskpipeError(f"{path}: cannot load checkpoint ({first})") from e
    model = create_model(ckpt["arch"], pretrained=False, num_classes=ckpt["num_classes"])
    model.load_state_dict(ckpt["state_dict"])
    return model.to(device).eval(), ckpt


@torch.no_grad()
def predict_probs(model: torch.nn.Module, dataset: CropDataset, device: torch.device,
                  tta: str, batch_size: int, desc: str) -> np.ndarray:
    """Softmax probabilities; with ``tta="hflip"`` the mean over the image and its mirror."""
    loader = DataLoader(dataset, batch_size=batch_size)
    out = []
    for x in tqdm(loader, desc=desc, unit="batch", disable=None):
        x = x.to(device)
        p = torch.softmax(model(x).float(), dim=1)
        if tta == "hflip":
            p = (p + torch.softmax(model(torch.flip(x, dims=[3])).float(), dim=1)) / 2
        out.append(p.cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, NUM_CLASSES), dtype=np.float32)


def _table(keys: pd.DataFrame, probs: np.ndarray) -> pd.DataFrame:
    # Six decimals keep the CSV small and its bytes stable across reruns.
    return pd.concat([keys.reset_index(drop=True),
                      pd.DataFrame(np.round(probs, 6), columns=PROB_COLUMNS)], axis=1)


def run(checkpoint: Path, fold: int, model_name: str, train_crops: Path, train_index: Path,
        eval_crops: Path, eval_index: Path, labels: Path, folds: Path, tta: str,
        batch_size: int, device: torch.device, out_oof: Path, out_test: Path) -> None:
    """Write OOF probabilities for the fold's validation images and test probabilities."""
    model, ckpt = load_checkpoint(checkpoint, device)
    tf = build_transforms(tuple(ckpt["image_size"]), ckpt["mean"], ckpt["std"],
                          ckpt.get("preprocess", []), None)
    table = join_split(train_index, labels, folds)
    val = table[table["fold"] == fold]
    oof = predict_probs(model, CropDataset(train_crops, val["row"].to_numpy(), None, tf), device,
                        tta, batch_size, f"predict {model_name} fold {fold} oof")
    eval_idx = read_csv(eval_index, required=["key", "row"], dtype={"key": str})
    test = predict_probs(model, CropDataset(eval_crops, eval_idx["row"].to_numpy(), None, tf),
                         device, tta, batch_size, f"predict {model_name} fold {fold} test")
    meta = val[["key", "person"]].assign(model=model_name, fold=fold, tta=tta)
    write_csv(_table(meta, oof), out_oof)
    write_csv(_table(eval_idx[["key"]].assign(model=model_name, fold=fold, tta=tta), test), out_test)
    log.info("%s fold %d: %d out-of-fold and %d test predictions (tta %s)",
             model_name, fold, len(val), len(eval_idx), tta)
