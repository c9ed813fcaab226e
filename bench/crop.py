"""Benchmark the crop step against the notebook way, on the same images.

    python bench/crop.py --data data/demo --images 300

Three rows, after one read of every image file (so no row pays for a cold file cache):
1. notebook loop: one MTCNN call per image on the full-resolution photo (facenet-pytorch
   defaults), then crop and save a JPEG;
2. the same per-image loop with maskpipe's detector settings (the config's crop section:
   detection on a downscaled copy, portrait-sized min_face_size, its thresholds), which
   separates what the settings gain from what batching and workers gain;
3. maskpipe's crop step: batches of equal-sized images, one chunk per core at once (threads,
   one torch thread each), detection + crop + write.
Prints images/s and faces found of each row, the ratio of row 3 to row 1 (target >= 10x on a
2-core CPU), and the agreement of maskpipe's boxes with the full-resolution ones (IoU; target
median >= 0.9). Run by hand; tests/test_bench.py only checks that it runs.
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from maskpipe.crop import (BoxCache, CropGeometry, DetectionPass, DetectorSettings, crop_split, detect_boxes,
                           make_detector)
from maskpipe.crop.splits import default_workers
from maskpipe.data.manifest import build_train_manifest
from maskpipe.images import read_rgb


def iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def per_image_loop(manifest, data: Path, detect) -> tuple[list[np.ndarray | None], float]:
    """Detect, crop and save one image at a time, as the notebooks did: (boxes, seconds)."""
    boxes = []
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        for i, path in enumerate(manifest["path"]):
            image = read_rgb(data / path)
            box = detect(image)
            boxes.append(box)
            # ...then crop with a margin (or the centre) and save a JPEG, as the notebooks did
            region = box if box is not None else np.array([64, 64, 320, 448])
            image.crop(tuple(int(v) for v in region)).resize((192, 256)).save(Path(tmp) / f"{i}.jpg")
        return boxes, time.perf_counter() - start


def notebook_detector():
    from facenet_pytorch import MTCNN

    naive = MTCNN(keep_all=False, device="cpu")  # notebook defaults: min_face_size=20, full size

    def detect(image):
        boxes, _ = naive.detect(image)
        return None if boxes is None else np.asarray(boxes[0], dtype=float)
    return detect


def maskpipe_crop_step(manifest, data: Path, settings: DetectorSettings, batch_size: int,
                       workers: int) -> tuple[list[np.ndarray | None], float]:
    """The crop step's own function on the same images, with a fresh detection cache."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache = BoxCache(tmp / "cache", settings)
        start = time.perf_counter()
        crop_split(manifest, data, tmp / "c.npy", tmp / "c.csv", CropGeometry(256, 192, 0.2),
                   [DetectionPass(settings, cache, functools.partial(make_detector, settings, "cpu"))],
                   batch_size=batch_size, desc="bench", workers=workers)
        seconds = time.perf_counter() - start
        return [cache.boxes[h][0] for h in manifest["sha256"]], seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data/demo"))
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--threads", type=int, default=None, help="torch threads of the per-image loops")
    parser.add_argument("--workers", type=int, default=None,
                        help="chunks the crop step works on at once (default: one per usable core)")
    parser.add_argument("--config", type=Path, default=Path("config.yaml"),
                        help="crop settings are read from this config's crop section")
    args = parser.parse_args()
    from maskpipe.config import load_raw

    if args.threads:
        torch.set_num_threads(args.threads)
    manifest = build_train_manifest(args.data).head(args.images)
    n, workers = len(manifest), args.workers or default_workers()
    crop = load_raw(args.config)["crop"]
    settings = DetectorSettings(crop["detect_scale"], crop["min_face_size"], tuple(crop["thresholds"]))
    for path in manifest["path"]:  # warm the file cache: every row reads files the OS already holds
        (args.data / path).read_bytes()

    naive, naive_s = per_image_loop(manifest, args.data, notebook_detector())
    ours_det = make_detector(settings, "cpu")
    tuned, tuned_s = per_image_loop(manifest, args.data,
                                    lambda im: detect_boxes([im], ours_det, settings.detect_scale)[0][0])
    ours, ours_s = maskpipe_crop_step(manifest, args.data, settings, crop["batch_size"], workers)

    def faces(boxes):
        return f"{sum(b is not None for b in boxes)}/{n} faces"

    print(f"images: {n} ({args.data}), file cache warmed")
    print(f"1 notebook loop (full size, per image, crop + save):  {n / naive_s:7.1f} img/s  ({faces(naive)})")
    print(f"2 per-image loop, maskpipe detector (scale {settings.detect_scale}, min face "
          f"{settings.min_face_size}, crop + save): {n / tuned_s:7.1f} img/s  ({faces(tuned)})")
    print(f"3 maskpipe crop step (batch {crop['batch_size']}, {workers} workers, detection + crop + write): "
          f"{n / ours_s:7.1f} img/s  ({faces(ours)})")
    print(f"speed-up 3 vs 1: {naive_s / ours_s:.1f}x   (target >= 10x); settings alone (2 vs 1): "
          f"{naive_s / tuned_s:.1f}x; batching and workers (3 vs 2): {tuned_s / ours_s:.1f}x")
    both = [(a, b) for a, b in zip(naive, ours, strict=True) if a is not None and b is not None]
    ious = np.array([iou(a, b) for a, b in both])
    if len(ious):
        print(f"box IoU vs full-size detection on {len(ious)} images found by both: "
              f"median {np.median(ious):.3f}, 5th percentile {np.percentile(ious, 5):.3f}   "
              "(target median >= 0.9)")


if __name__ == "__main__":
    main()
