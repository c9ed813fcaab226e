"""How often maskpipe's face detector finds a face: generated photos against real ones.

    python bench/detect_rates.py --data data/real --real ../shared/realfaces/masked_photos

Runs MTCNN with the crop step's settings (the config's ``crop`` section: detection scale,
min_face_size, thresholds) on
- a generated set in the competition's layout (``--data``; e.g. ``maskpipe demo-data --faces``
  or the embedded demo): train and eval photos, by mask status (wear / incorrect / normal);
- real photos (``--real``, the research-only ``masked_photos/`` folder): ``with_mask``,
  ``incorrect_mask`` and ``without_mask`` crops whose face is at least ``--min-face`` px wide (a
  crop holds the face box plus 25% per side), each scaled to portrait width (384 px) and placed
  on a 384x512 canvas of its mean colour, as a portrait photo frames a face.
Prints the share of photos with a face found, per group, side by side. A group is sampled down
to ``--limit`` photos (seeded). Run by hand; nothing here is timed in the tests.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from maskpipe.classes import MASK_BY_STEM, decode
from maskpipe.config import load_raw
from maskpipe.crop import DetectorSettings, detect_boxes, make_detector
from maskpipe.images import read_rgb

WIDTH, HEIGHT = 384, 512
MASK_GROUPS = ("wear", "incorrect", "normal")
REAL_GROUPS = {"with_mask": "wear", "incorrect_mask": "incorrect", "without_mask": "normal"}


def generated_photos(root: Path) -> pd.DataFrame:
    """path, split and mask group of every photo of a generated set."""
    rows = []
    for path in sorted((root / "train" / "images").glob("*/*.*")):
        if path.stem in MASK_BY_STEM:
            rows.append({"path": path, "split": "train", "group": MASK_GROUPS[MASK_BY_STEM[path.stem]]})
    truth = root / "demo_truth.csv"
    if truth.is_file():
        table = pd.read_csv(truth)
        mask, _, _ = decode(table["ans"].to_numpy())
        rows += [{"path": root / "eval" / "images" / name, "split": "eval", "group": MASK_GROUPS[m]}
                 for name, m in zip(table["ImageID"], mask, strict=True)]
    return pd.DataFrame(rows)


def real_photos(folder: Path, min_face: int) -> pd.DataFrame:
    """path and mask group of the real crops whose face box is at least ``min_face`` px wide."""
    rows = []
    for sub, group in REAL_GROUPS.items():
        for path in sorted((folder / sub).glob("*.*")):
            size = re.search(r"_(\d+)x(\d+)\.\w+$", path.name)
            if size and int(size.group(1)) / 1.5 >= min_face:  # crop = box + 25% margin per side
                rows.append({"path": path, "split": "real", "group": group})
    return pd.DataFrame(rows)


def as_portrait(image: Image.Image) -> Image.Image:
    """A face crop scaled to portrait width, on a 384x512 canvas of its mean colour."""
    scale = min(WIDTH / image.width, HEIGHT / image.height)
    small = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)
    canvas = Image.new("RGB", (WIDTH, HEIGHT), tuple(int(c) for c in np.asarray(image).mean((0, 1))))
    canvas.paste(small, ((WIDTH - small.width) // 2, (HEIGHT - small.height) // 3))
    return canvas


def found_share(paths: list[Path], detector, scale: float, portrait: bool, batch: int = 16) -> float:
    """Share of ``paths`` where the detector finds a face."""
    found = 0
    for start in range(0, len(paths), batch):
        images = [read_rgb(p) for p in paths[start:start + batch]]
        if portrait:
            images = [as_portrait(im) for im in images]
        found += sum(box is not None for box, _ in detect_boxes(images, detector, scale))
    return found / max(1, len(paths))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, action="append", default=[],
                        help="generated set(s) in the competition layout (repeatable)")
    parser.add_argument("--real", type=Path, default=Path("../shared/realfaces/masked_photos"))
    parser.add_argument("--min-face", type=int, default=64, help="smallest real face box width, px")
    parser.add_argument("--limit", type=int, default=300, help="photos per group at most (seeded sample)")
    parser.add_argument("--config", type=Path, default=Path("config.yaml"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    crop = load_raw(args.config)["crop"]
    settings = DetectorSettings(crop["detect_scale"], crop["min_face_size"], tuple(crop["thresholds"]))
    detector = make_detector(settings, "cuda" if torch.cuda.is_available() else "cpu")

    sets = [(str(root), generated_photos(root), False) for root in args.data]
    if args.real.is_dir():
        sets.append((f"{args.real} (face >= {args.min_face} px)", real_photos(args.real, args.min_face), True))
    else:
        print(f"{args.real}: absent, real photos skipped")
    print(f"detector: {settings}")
    print(f"{'set':<60} {'group':<10} {'photos':>7} {'found':>7}")
    for name, table, portrait in sets:
        for group in MASK_GROUPS:
            paths = table.loc[table["group"] == group, "path"].tolist()
            if len(paths) > args.limit:
                rng = np.random.default_rng(args.seed)
                paths = [paths[i] for i in sorted(rng.choice(len(paths), args.limit, replace=False))]
            if paths:
                share = found_share(paths, detector, settings.detect_scale, portrait)
                print(f"{name[-60:]:<60} {group:<10} {len(paths):>7} {share:>7.1%}", flush=True)


if __name__ == "__main__":
    main()
