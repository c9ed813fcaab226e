"""From a face box to a fixed-size crop: margin, aspect ratio, fallbacks."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class CropGeometry:
    """How a box becomes a crop: output size, margin and the no-face fallback region."""

    height: int = 256
    width: int = 192
    margin: float = 0.2
    fallback: tuple[float, float, float, float] = (0.5, 0.45, 0.6, 0.6)  # cx, cy, w, h fractions


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


def group_boxes(boxes: list[np.ndarray | None], groups: list) -> dict:
    """Median box of each group (a person's, or a shoot's, photos share one framing)."""
    found: dict[str, list[np.ndarray]] = defaultdict(list)
    for box, group in zip(boxes, groups, strict=True):
        if box is not None:
            found[group].append(box)
    return {g: np.median(np.stack(b), axis=0) for g, b in found.items()}
