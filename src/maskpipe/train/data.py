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


def pseudo_rows(eval_index: Path, pseudo_labels: Path) -> pd.DataFrame:
    """The pseudo-labelled eval photos with their crop row: ``key, row, label, train_label``.

    A pseudo-label is an official class (the ensemble predicts those), so it is also the
    training target: a moved age cut (``labels.train_age_bounds``) cannot be applied without
    the photo's age.
    """
    index = read_csv(eval_index, required=["key", "row"], dtype={"key": str})
    chosen = read_csv(pseudo_labels, required=["key", "label"], dtype={"key": str})
    df = chosen[["key", "label"]].merge(index[["key", "row"]], on="key", how="left", validate="one_to_one")
    if df["row"].isna().any():
        missing = df.loc[df["row"].isna(), "key"].iloc[0]
        raise MaskpipeError(f"{pseudo_labels}: eval photo {missing!r} is not in {eval_index}")
    bad = ~df["label"].between(0, 17)
    if bad.any():
        raise MaskpipeError(f"{pseudo_labels}: line {int(np.flatnonzero(bad)[0]) + 2}: label "
                            f"{df['label'][bad].iloc[0]} is not a class 0..17")
    return df.astype({"row": int, "label": int}).assign(train_label=lambda d: d["label"])
