"""The training data feed: memory-mapped uint8 crops through albumentations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from maskpipe.io import MaskpipeError, read_csv


class CropDataset(Dataset):
    """Rows of a crops ``.npy`` file, transformed, with optional labels.

    The array is opened lazily in each worker with ``mmap_mode="r"``, so workers share the page
    cache and nothing holds the whole dataset in memory.
    """

    def __init__(self, npy_path: Path, rows: np.ndarray, labels: np.ndarray | None, transform):
        self.npy_path = Path(npy_path)
        self.rows = np.asarray(rows, dtype=np.int64)
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        self.transform = transform
        self._array: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        if self._array is None:
            self._array = np.load(self.npy_path, mmap_mode="r")
        image = self.transform(image=np.asarray(self._array[self.rows[i]]))["image"]
        if self.labels is None:
            return image
        return image, torch.tensor(self.labels[i])


def join_split(crop_index: Path, labels: Path, folds: Path) -> pd.DataFrame:
    """Labelled training images with their crop row and fold (dropped images left out)."""
    index = read_csv(crop_index, required=["key", "row"], dtype={"key": str})
    lab = read_csv(labels, required=["key", "person", "label", "train_label"],
                   dtype={"key": str, "id": str})
    fold = read_csv(folds, required=["person", "fold"])
    df = lab.merge(index[["key", "row"]], on="key", how="left", validate="one_to_one")
    if df["row"].isna().any():
        missing = df.loc[df["row"].isna(), "key"].iloc[0]
        raise MaskpipeError(f"{crop_index}: no crop for image {missing!r}; rerun the crop step")
    df = df.merge(fold[["person", "fold"]], on="person", how="left", validate="many_to_one")
    if df["fold"].isna().any():
        missing = df.loc[df["fold"].isna(), "person"].iloc[0]
        raise MaskpipeError(f"{folds}: no fold for person {missing!r}; rerun the folds step")
    return df.astype({"row": int, "fold": int})
