"""Benchmark the crop step against the notebook way, on the same images.

    python bench/crop.py --data data/demo --images 300

Notebook way: one MTCNN call per image on the full-resolution photo (facenet-pytorch defaults),
then crop and save a JPEG.
maskpipe: batches of equal-sized images, detection on a half-size copy, portrait-sized
min_face_size, one chunk per core at once (threads, one torch thread each). Prints images/s of both, their ratio (target >= 10x on a 2-core CPU), and the
agreement of the boxes (IoU with the full-resolution detection; target median >= 0.9).
Run by hand; nothing here is timed in the tests.
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from maskpipe.crop import BoxCache, CropGeometry, DetectionPass, DetectorSettings, crop_split, make_detector
from maskpipe.crop.step import default_workers
from maskpipe.data.manifest import build_train_manifest
from maskpipe.images import read_rgb


def iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data/demo"))
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--threads", type=int, default=None, help="torch threads of the notebook loop")
    parser.add_argument("--workers", type=int, default=None,
                        help="chunks the crop step works on at once (default: one per usable core)")
    parser.add_argument("--config", type=Path, default=Path("config.yaml"),
                        help="crop settings are read from this config's crop section")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    manifest = build_train_manifest(args.data).head(args.images)
    n = len(manifest)

    from facenet_pytorch import MTCNN

    naive = MTCNN(keep_all=False, device="cpu")  # notebook defaults: min_face_size=20, full size
    naive_boxes = []
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        for i, path in enumerate(manifest["path"]):
            image = read_rgb(args.data / path)
            boxes, _ = naive.detect(image)
            box = None if boxes is None else np.asarray(boxes[0], dtype=float)
            naive_boxes.append(box)
            # ...then crop with a margin (or the centre) and save a JPEG, as the notebooks did
            region = box if box is not None else np.array([64, 64, 320, 448])
            image.crop(tuple(int(v) for v in region)).resize((192, 256)).save(Path(tmp) / f"{i}.jpg")
        naive_s = time.perf_counter() - start

    from maskpipe.config import load_raw

    workers = args.workers or default_workers()

    crop = load_raw(args.config)["crop"]
    settings = DetectorSettings(crop["detect_scale"], crop["min_face_size"], tuple(crop["thresholds"]))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache = BoxCache(tmp / "cache", settings)
        start = time.perf_counter()
        crop_split(manifest, args.data, tmp / "c.npy", tmp / "c.csv", CropGeometry(256, 192, 0.2),
                   [DetectionPass(settings, cache, functools.partial(make_detector, settings, "cpu"))],
                   batch_size=crop["batch_size"], desc="bench", workers=workers)
        ours_s = time.perf_counter() - start
        ours = [cache.boxes[h][0] for h in manifest["sha256"]]

    both = [(a, b) for a, b in zip(naive_boxes, ours, strict=True) if a is not None and b is not None]
    ious = np.array([iou(a, b) for a, b in both])
    print(f"images: {n} ({args.data})")
    print(f"notebook loop (full size, per image, crop + save): {n / naive_s:7.1f} img/s  "
          f"({sum(b is not None for b in naive_boxes)} faces)")
    print(f"maskpipe crop (scale {settings.detect_scale}, min face {settings.min_face_size}, "
          f"batch {crop['batch_size']}, {workers} workers): {n / ours_s:7.1f} img/s  "
          f"({sum(b is not None for b in ours)} faces, detection + crop + write)")
    print(f"speed-up: {naive_s / ours_s:.1f}x   (target >= 10x)")
    if len(ious):
        print(f"box IoU vs full-size detection on {len(ious)} images found by both: "
              f"median {np.median(ious):.3f}, 5th percentile {np.percentile(ious, 5):.3f}   "
              "(target median >= 0.9)")


if __name__ == "__main__":
    main()
