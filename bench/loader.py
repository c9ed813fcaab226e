"""Benchmark the training data feed against a naive loader, on the same images.

    python bench/loader.py --results results/demo --data data/demo --epochs 2

maskpipe: memory-mapped uint8 crops (crops/train.npy) -> albumentations -> DataLoader.
Naive: open the full 384x512 photo with PIL every epoch, crop the face box, resize, same
augmentations (the first model's ``augment`` in --config). Prints images/s of both, the ratio
(target >= 5x) and the peak resident memory growth of each (the feed must not hold the dataset in
RAM). Run by hand; tests/test_bench.py only checks that it runs.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import torch
from torch.utils.data import DataLoader, Dataset

from maskpipe.config import load_raw
from maskpipe.images import read_rgb
from maskpipe.layout import Layout
from maskpipe.train.augment import build_transforms
from maskpipe.train.data import CropDataset

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class NaiveDataset(Dataset):
    """The notebook feed: decode the full photo, crop its box, resize, every time."""

    def __init__(self, root: Path, paths: list[str], boxes: np.ndarray, size: tuple[int, int], transform):
        self.root, self.paths, self.boxes, self.size, self.transform = root, paths, boxes, size, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        im = read_rgb(self.root / self.paths[i]).crop(tuple(int(v) for v in self.boxes[i]))
        im = im.resize((self.size[1], self.size[0]))
        return self.transform(image=np.asarray(im))["image"]


def _anonymous(proc: psutil.Process) -> int:
    # RSS minus file-backed pages: memory-mapped crop pages belong to the page cache, which the
    # OS drops under pressure; anonymous memory is what a feed that "holds the dataset" grows.
    info = proc.memory_info()
    return info.rss - info.shared


def measure(dataset: Dataset, epochs: int, batch_size: int, workers: int) -> tuple[float, float]:
    proc = psutil.Process()
    base = _anonymous(proc)
    peak = base
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers)
    seen = 0
    start = time.perf_counter()
    for _ in range(epochs):
        for x in loader:
            seen += len(x)
            peak = max(peak, _anonymous(proc))
    return seen / (time.perf_counter() - start), (peak - base) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=Path("results/demo"))
    parser.add_argument("--data", type=Path, default=Path("data/demo"))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--size", type=int, nargs=2, default=(224, 224))
    parser.add_argument("--config", type=Path, default=Path("config.yaml"),
                        help="the augmentations are its first model's")
    args = parser.parse_args()
    torch.set_num_threads(1)
    augment = next(iter(load_raw(args.config)["models"].values()))["augment"]
    L = Layout(str(args.results))
    index = pd.read_csv(L.crop_index("train"))
    manifest = pd.read_csv(L.manifest("train")).set_index("key").loc[index["key"]]
    size = tuple(args.size)
    ours = CropDataset(Path(L.crops("train")), index["row"].to_numpy(), None,
                       build_transforms(size, MEAN, STD, [], augment, seed=0))
    naive = NaiveDataset(args.data, list(manifest["path"]), index[["x1", "y1", "x2", "y2"]].to_numpy(),
                         size, build_transforms(size, MEAN, STD, [], augment, seed=0))
    n = len(index)
    naive_ips, naive_mb = measure(naive, args.epochs, args.batch_size, args.workers)
    ours_ips, ours_mb = measure(ours, args.epochs, args.batch_size, args.workers)
    crops_mb = Path(L.crops("train")).stat().st_size / 2**20
    print(f"images: {n} x {args.epochs} epochs, output {size[0]}x{size[1]}, workers {args.workers}")
    print(f"naive (PIL full photo each epoch): {naive_ips:7.1f} img/s, peak anonymous memory +{naive_mb:.0f} MiB")
    print(f"maskpipe (memory-mapped crops):    {ours_ips:7.1f} img/s, peak anonymous memory +{ours_mb:.0f} MiB "
          f"(crop file {crops_mb:.0f} MiB, paged in by the OS, not copied)")
    print(f"speed-up: {ours_ips / naive_ips:.1f}x   (target >= 5x)")


if __name__ == "__main__":
    main()
