"""The ``crop`` step: batched MTCNN face detection and fixed-size face crops.

facenet-pytorch's MTCNN batch mode needs equal-sized images and its ``forward()`` raises on a
batch holding a faceless image (facenet-pytorch issue #224), so this module groups images by size,
calls ``detect()`` on downscaled copies, maps the boxes back to full resolution and crops itself.

Detections are cached per image content hash and detector settings, so label, fold or training
edits never detect again and new images are the only ones detected. Crops are stored as one
uint8 ``.npy`` array per split: training memory-maps it and decodes nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from maskpipe.io import npy_writer, read_csv, read_rgb, write_csv

log = logging.getLogger(__name__)

BOX_COLUMNS = ["x1", "y1", "x2", "y2"]


@dataclass(frozen=True)
class DetectorSettings:
    """What decides where MTCNN finds a face; the cache key of a detection."""

    detect_scale: float = 0.5
    min_face_size: int = 80
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)

    def key(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class CropGeometry:
    """How a box becomes a crop: output size, margin and the no-face fallback region."""

    height: int = 256
    width: int = 192
    margin: float = 0.2
    fallback: tuple[float, float, float, float] = (0.5, 0.45, 0.6, 0.6)  # cx, cy, w, h fractions


def make_detector(settings: DetectorSettings, device: str):
    """facenet-pytorch MTCNN configured for full-frame portraits at the detection scale."""
    from facenet_pytorch import MTCNN  # heavy import, only for the crop step

    min_size = max(12, round(settings.min_face_size * settings.detect_scale))
    return MTCNN(min_face_size=min_size, thresholds=list(settings.thresholds),
                 select_largest=True, keep_all=False, device=device)


def detect_boxes(images: list[Image.Image], detector, scale: float) -> list[tuple[np.ndarray | None, float]]:
    """Largest face box (full-resolution x1, y1, x2, y2) and its probability per image.

    Images of different sizes are detected in separate batches. ``None`` means no face found.
    """
    out: list[tuple[np.ndarray | None, float]] = [(None, float("nan"))] * len(images)
    by_size: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, im in enumerate(images):
        by_size[im.size].append(i)
    for (w, h), idx in by_size.items():
        small_size = (max(1, round(w * scale)), max(1, round(h * scale)))
        small = [images[i].resize(small_size, Image.Resampling.BILINEAR) for i in idx]
        boxes, probs = detector.detect(small)
        for i, b, p in zip(idx, boxes, probs, strict=True):
            if b is None or len(b) == 0:
                continue
            # detect() returns object arrays; take the first (largest) face as float64.
            box = np.asarray(b[0], dtype=np.float64) / scale
            prob = float(np.asarray(p, dtype=np.float64).reshape(-1)[0])
            out[i] = (box, prob)
    return out


def crop_region(box: np.ndarray, margin: float, aspect: float) -> np.ndarray:
    """Grow a box by ``margin`` per side, then to ``aspect`` (height / width) around its centre."""
    x1, y1, x2, y2 = box
    w, h = (x2 - x1) * (1 + 2 * margin), (y2 - y1) * (1 + 2 * margin)
    if h / w < aspect:
        h = w * aspect
    else:
        w = h / aspect
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


def fallback_box(image_size: tuple[int, int], fallback: tuple[float, float, float, float]) -> np.ndarray:
    """The configured fixed region, in pixels, for an image of ``(width, height)``."""
    W, H = image_size
    cx, cy, fw, fh = fallback
    return np.array([(cx - fw / 2) * W, (cy - fh / 2) * H, (cx + fw / 2) * W, (cy + fh / 2) * H])


def cut(image: Image.Image, region: np.ndarray, height: int, width: int) -> np.ndarray:
    """Crop ``region`` (may reach outside the image: filled black) and resize to ``height x width``."""
    x1, y1, x2, y2 = (int(round(v)) for v in region)
    patch = image.crop((x1, y1, x2, y2)).resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(patch, dtype=np.uint8)


class BoxCache:
    """Detections per image content hash, one CSV per detector setting, kept between runs."""

    def __init__(self, folder: Path, settings: DetectorSettings):
        self.path = Path(folder) / f"{settings.key()}.csv"
        self.boxes: dict[str, tuple[np.ndarray | None, float]] = {}
        if self.path.is_file():
            df = pd.read_csv(self.path)
            for row in df.itertuples(index=False):
                box = None if np.isnan(row.x1) else np.array([row.x1, row.y1, row.x2, row.y2])
                self.boxes[row.sha256] = (box, row.prob)

    def save(self) -> None:
        rows = [
            {"sha256": h, **dict(zip(BOX_COLUMNS, b if b is not None else [np.nan] * 4)), "prob": p}
            for h, (b, p) in sorted(self.boxes.items())
        ]
        write_csv(pd.DataFrame(rows, columns=["sha256", *BOX_COLUMNS, "prob"]), self.path)


def crop_split(
    manifest: pd.DataFrame,
    root: Path,
    out_npy: Path,
    out_index: Path,
    geometry: CropGeometry,
    detector_settings: DetectorSettings,
    cache: BoxCache,
    detector_factory,
    batch_size: int = 16,
    desc: str = "crop",
) -> pd.DataFrame:
    """Crop every manifest image into ``out_npy`` (row order = manifest order) and index it.

    ``detector_factory`` is called only if some image is not in the cache. Returns the index.
    """
    n = len(manifest)
    records = []
    detector = None
    aspect = geometry.height / geometry.width
    workers = min(4, os.cpu_count() or 1)
    with npy_writer(out_npy, (n, geometry.height, geometry.width, 3)) as array, \
            ThreadPoolExecutor(max_workers=workers) as pool, \
            tqdm(total=n, desc=desc, unit="img", disable=None) as bar:
        for start in range(0, n, batch_size):
            chunk = manifest.iloc[start:start + batch_size]
            images = list(pool.map(read_rgb, [root / p for p in chunk["path"]]))
            todo = [i for i, h in enumerate(chunk["sha256"]) if h not in cache.boxes]
            if todo:
                detector = detector or detector_factory()
                found = detect_boxes([images[i] for i in todo], detector, detector_settings.detect_scale)
                for i, hit in zip(todo, found, strict=True):
                    cache.boxes[chunk["sha256"].iloc[i]] = hit
            for i, (im, row) in enumerate(zip(images, chunk.itertuples(index=False), strict=True)):
                box, prob = cache.boxes[row.sha256]
                if box is None:
                    source, region = "fallback", fallback_box(im.size, geometry.fallback)
                    region = crop_region(region, 0.0, aspect)
                else:
                    source, region = "detected", crop_region(box, geometry.margin, aspect)
                array[start + i] = cut(im, region, geometry.height, geometry.width)
                records.append({"key": row.key, "row": start + i, "sha256": row.sha256,
                                "source": source, "prob": round(prob, 6) if box is not None else np.nan,
                                **{c: round(float(v), 2) for c, v in zip(BOX_COLUMNS, region)}})
            bar.update(len(chunk))
    index = pd.DataFrame(records)
    write_csv(index, out_index)
    cache.save()
    fallbacks = int((index["source"] == "fallback").sum()) if n else 0
    log.info("%s: %d images, %d detected, %d fallback crops", desc, n, n - fallbacks, fallbacks)
    return index


def run(
    train_manifest: Path,
    eval_manifest: Path,
    root: Path,
    out_dir: Path,
    cache_dir: Path,
    crop: dict,
    device: str = "cpu",
) -> None:
    """The whole step: crops for train and eval images, with the same settings for both."""
    from maskpipe.config import as_hw

    height, width = as_hw(crop["size"])
    fb = crop["fallback"]
    geometry = CropGeometry(height, width, crop["margin"],
                            (fb["center_x"], fb["center_y"], fb["width"], fb["height"]))
    settings = DetectorSettings(crop["detect_scale"], crop["min_face_size"], tuple(crop["thresholds"]))
    cache = BoxCache(cache_dir, settings)
    factory = lambda: make_detector(settings, device)  # noqa: E731
    for split, manifest_path in (("train", train_manifest), ("eval", eval_manifest)):
        manifest = read_csv(manifest_path, required=["key", "path", "sha256"], dtype={"key": str})
        crop_split(manifest, root, out_dir / f"{split}.npy", out_dir / f"{split}.csv", geometry,
                   settings, cache, factory, crop["batch_size"], desc=f"crop {split}")
