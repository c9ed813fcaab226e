"""Where each photo is cropped from: its own detection, a second pass that agrees with its
person or shoot, the group's median box, or the fixed region (:data:`SOURCES`)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from maskpipe.crop.detect import BOX_COLUMNS
from maskpipe.crop.geometry import CropGeometry, crop_region, cut, fallback_box, group_boxes
from maskpipe.crop.shoots import ShootGrouping, group_shoots
from maskpipe.images import read_rgb

#: How a crop was placed, best first: MTCNN's first pass found the face; its second pass did (on
#: a photo the first missed, and where the box agrees with the photo's person or shoot); the
#: median first-pass box of the person's photos (train) or of the shoot's (eval); the fixed region.
SOURCES = ("detected", "second_pass", "person", "shoot", "fallback")

#: A detection: (full-resolution box or None, probability, pass that found it: 1, 2, or 0 none).
Hit = tuple[np.ndarray | None, float, int]

@dataclass(frozen=True)
class Placement:
    """Where a photo without its own first-pass detection is cropped from."""

    min_iou: float = 0.5  # a second-pass box is used only if it overlaps its group's box this much
    shoots: ShootGrouping | None = None  # group eval photos into shoots (None: each on its own)


def placement(crop: dict) -> Placement:
    """The ``crop`` section's :class:`Placement` (second-pass agreement, eval shoots)."""
    shoots = crop["shoots"]
    grouping = ShootGrouping(shoots["max_distance"], shoots["neighbours"]) if shoots["enabled"] else None
    return Placement(crop["second_pass"]["min_iou"], grouping)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return float(w * h / union) if union > 0 else 0.0


def group_hits(hits: list[Hit], groups: list) -> dict:
    """Each group's box: the median of its first-pass boxes, else of its second-pass boxes."""
    first = group_boxes([h[0] if h[2] == 1 else None for h in hits], groups)
    second = group_boxes([h[0] if h[2] == 2 else None for h in hits], groups)
    return {**second, **first}


def place_photo(hit: Hit, group_box: np.ndarray | None, group_source: str, image_size: tuple[int, int],
           geometry: CropGeometry, min_iou: float) -> tuple[str, np.ndarray, float]:
    """(source, crop region, probability) of one photo; see :data:`SOURCES`."""
    box, prob, found_by = hit
    aspect = geometry.height / geometry.width
    if found_by == 1:
        return "detected", crop_region(box, geometry.margin, aspect), prob
    # Lower thresholds also find faces where there are none (a patterned mask, a collar): a
    # second-pass box must agree with the other photos of its shoot where there are any.
    if found_by == 2 and (group_box is None or iou(box, group_box) >= min_iou):
        return "second_pass", crop_region(box, geometry.margin, aspect), prob
    if group_box is not None:
        return group_source, crop_region(group_box, geometry.margin, aspect), float("nan")
    return "fallback", crop_region(fallback_box(image_size, geometry.fallback), 0.0, aspect), float("nan")


def record(source: str, region: np.ndarray, prob: float, shoot: str) -> dict:
    return {"source": source, "prob": round(prob, 6) if source in SOURCES[:2] else np.nan,
            **{c: round(float(v), 2) for c, v in zip(BOX_COLUMNS, region)}, "shoot": shoot}


def place_by_shoot(manifest: pd.DataFrame, root: Path, array: np.ndarray, records: list,
                    hits: list[Hit], looks: list, geometry: CropGeometry, place: Placement,
                    pool: ThreadPoolExecutor) -> None:
    """Group eval photos into shoots, then place and cut every photo left without a record."""
    shoots = (group_shoots(np.stack(looks), place.shoots) if looks
              else np.arange(len(records)))  # no grouping: every photo its own shoot
    names = [f"shoot{s:05d}" if looks else "" for s in shoots]
    boxes = group_hits(hits, list(shoots)) if looks else {}
    todo = [i for i, rec in enumerate(records) if rec is None]

    def place_one(i: int) -> tuple[np.ndarray, dict]:
        im = read_rgb(root / manifest["path"].iloc[i])
        source, region, prob = place_photo(hits[i], boxes.get(shoots[i]), "shoot", im.size, geometry,
                                      place.min_iou)
        return cut(im, region, geometry.height, geometry.width), record(source, region, prob, names[i])

    for i, (crop, rec) in zip(todo, pool.map(place_one, todo), strict=True):
        array[i] = crop
        records[i] = rec
    for i, rec in enumerate(records):
        rec["shoot"] = names[i]
