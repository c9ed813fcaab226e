"""How often MTCNN, with maskpipe's crop settings, finds a face: masked against unmasked photos.

Run by hand (not a test); reads real photos from ``../shared/realfaces/`` and never copies them:

    python bench/detect_rates.py --masked ../shared/realfaces/masked_photos --data data/bench

* ``--masked``: the real masked-face photos (``with_mask``, ``without_mask``, ``incorrect_mask``),
  faces at least ``--min-face`` px wide, each scaled so its face is ``--face-width`` px wide and
  pasted on a 384x512 canvas of its own mean colour (a portrait's framing).
* ``--data``: a data set in the competition layout (``maskpipe demo-data``, with or without
  ``--faces``): train photos by kind (mask1-5, incorrect_mask, normal), eval photos by their true
  mask state where ``demo_truth.csv`` says it.

Each row gives the share found by the first pass (``crop.detect_scale``, ``crop.min_face_size``,
``crop.thresholds``) and by the first or the second pass (``crop.second_pass``) of the config
given (default: the shipped ``config.yaml``).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from PIL import Image

from maskpipe.classes import MASK_BY_STEM
from maskpipe.config import validate
from maskpipe.crop import DetectorSettings, detect_boxes, make_detector
from maskpipe.crop.step import detector_passes
from maskpipe.images import read_rgb

REPO = Path(__file__).resolve().parents[1]
PORTRAIT = (384, 512)
MASK_NAMES = ("wear", "incorrect", "not_wear")


def masked_photos(folder: Path, min_face: int, face_width: int) -> list[tuple[str, Image.Image]]:
    """(kind, portrait-sized image) for every photo whose face is at least ``min_face`` px wide.

    The photos are cut with 25% margin per side (see the folder's README), so the face is
    2/3 of the photo's width; the name ends in the photo's size."""
    out = []
    for kind in ("with_mask", "without_mask", "incorrect_mask"):
        for path in sorted((folder / kind).glob("*.jpg")):
            w, _ = map(int, re.search(r"_(\d+)x(\d+)\.jpg$", path.name).groups())
            if w / 1.5 < min_face:
                continue
            im = read_rgb(path)
            scale = face_width / (im.size[0] / 1.5)
            im = im.resize((round(im.size[0] * scale), round(im.size[1] * scale)), Image.Resampling.BILINEAR)
            mean = tuple(int(c) for c in np.asarray(im).reshape(-1, 3).mean(axis=0))
            canvas = Image.new("RGB", PORTRAIT, mean)
            canvas.paste(im, ((PORTRAIT[0] - im.size[0]) // 2, int(PORTRAIT[1] * 0.45 - im.size[1] / 2)))
            out.append((kind, canvas))
    return out


def layout_photos(root: Path, limit: int) -> list[tuple[str, Path]]:
    """(kind, path) of train photos (by mask state) and eval photos (by true mask state if known)."""
    train = pd.read_csv(root / "train" / "train.csv", dtype=str)
    out = []
    for folder in train["path"].head(limit):
        for f in sorted((root / "train" / "images" / folder).iterdir()):
            if f.name.startswith("."):
                continue
            out.append((f"train {MASK_NAMES[MASK_BY_STEM[f.stem]]}", f))
    info = pd.read_csv(root / "eval" / "info.csv", dtype=str).head(limit * 7)
    truth_file = root / "demo_truth.csv"
    truth = (pd.read_csv(truth_file, dtype={"ImageID": str}).set_index("ImageID")["ans"]
             if truth_file.is_file() else None)
    for image_id in info["ImageID"]:
        kind = "eval" if truth is None else f"eval {MASK_NAMES[int(truth[image_id]) // 6]}"
        out.append((kind, root / "eval" / "images" / image_id))
    return out


def rates(items: list[tuple[str, Image.Image | Path]], passes: list[DetectorSettings], batch: int) -> pd.DataFrame:
    """Per kind: photos, share found by pass 1, by pass 1 or 2 (as the crop step runs them)."""
    detectors = [make_detector(s, "cpu") for s in passes]
    found = np.zeros((len(items), len(passes)), bool)
    for start in range(0, len(items), batch):
        part = items[start:start + batch]
        images = [im if isinstance(im, Image.Image) else read_rgb(im) for _, im in part]
        todo = list(range(len(images)))
        for k, (settings, det) in enumerate(zip(passes, detectors, strict=True)):
            hits = detect_boxes([images[i] for i in todo], det, settings.detect_scale)
            for i, (box, _) in zip(todo, hits, strict=True):
                found[start + i, k:] = box is not None
            todo = [i for i, (box, _) in zip(todo, hits, strict=True) if box is None]
            if not todo:
                break
    kinds = pd.Series([k for k, _ in items])
    table = pd.DataFrame({"kind": kinds, **{f"pass<={k + 1}": found[:, k] for k in range(len(passes))}})
    out = table.groupby("kind", sort=False).agg(["mean"]).droplevel(1, axis=1)
    return out.assign(photos=kinds.value_counts()).reset_index()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--masked", type=Path, help="the masked_photos folder")
    p.add_argument("--data", type=Path, help="a data set in the competition layout")
    p.add_argument("--config", type=Path, default=REPO / "config.yaml")
    p.add_argument("--persons", type=int, default=100, help="--data: train persons (and 7x eval photos) read")
    p.add_argument("--min-face", type=int, default=64)
    p.add_argument("--face-width", type=int, default=160, help="face width on the 384x512 canvas")
    p.add_argument("--batch", type=int, default=16)
    args = p.parse_args(argv)
    crop = validate(yaml.safe_load(args.config.read_text()), str(args.config))["crop"]
    passes = detector_passes(crop)
    print(f"passes: {passes}", file=sys.stderr)
    if args.masked:
        t = time.perf_counter()
        table = rates(masked_photos(args.masked, args.min_face, args.face_width), passes, args.batch)
        print(f"\nmasked_photos (faces >= {args.min_face} px, scaled to {args.face_width} px wide), "
              f"{time.perf_counter() - t:.0f} s\n{table.to_string(index=False, float_format='{:.3f}'.format)}")
    if args.data:
        t = time.perf_counter()
        table = rates(layout_photos(args.data, args.persons), passes, args.batch)
        print(f"\n{args.data} ({args.persons} persons), {time.perf_counter() - t:.0f} s\n"
              f"{table.to_string(index=False, float_format='{:.3f}'.format)}")


if __name__ == "__main__":
    main()
