"""The training data feed: memory-mapped uint8 crops through albumentations."""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import numpy as np
import pandas as pd
import torch
from albumentations.pytorch import ToTensorV2
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


def build_transforms(size: tuple[int, int], mean, std, augment: dict | None,
                     seed: int | None = None) -> A.Compose:
    """Resize + normalise, with the configured augmentations when ``augment`` is given.

    ``strict=True`` makes albumentations reject unknown or removed arguments instead of warning.
    albumentations draws from its own generator, not from numpy's or torch's: without ``seed``
    two runs augment differently; DataLoader workers reseed it (:func:`reseed_worker`).
    """
    h, w = size
    ops: list = [A.Resize(height=h, width=w)]
    if augment:
        ops += [
            A.HorizontalFlip(p=augment["hflip"]),
            A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02,
                          p=augment["color_jitter"]),
            A.Affine(scale=(0.9, 1.1), translate_percent=(-0.05, 0.05), rotate=(-10, 10),
                     p=augment["affine"]),
        ]
    ops += [A.Normalize(mean=mean, std=std), ToTensorV2()]
    return A.Compose(ops, strict=True, seed=seed)


def reseed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: give each worker's albumentations its own stream.

    torch seeds each worker from the loader's generator (different per epoch, same per run),
    so the augmentations are reproducible and never repeat across workers or epochs.
    """
    info = torch.utils.data.get_worker_info()
    transform = getattr(info.dataset, "transform", None)
    if transform is not None and hasattr(transform, "set_random_seed"):
        transform.set_random_seed(torch.initial_seed() % 2**32)


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
