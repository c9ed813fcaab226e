"""The ``crop`` step: every train and eval image to a stored face crop, with the same settings."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from maskpipe.crop.detect import BOX_COLUMNS, BoxCache, DetectorSettings, detect_boxes, make_detector
from maskpipe.crop.geometry import CropGeometry, crop_region, cut, fallback_box, person_boxes
from maskpipe.crop.sheet import contact_sheet
from maskpipe.io import npy_writer, read_csv, read_rgb, write_bytes_if_changed, write_csv

log = logging.getLogger(__name__)

SOURCES = ("detected", "person", "fallback")


def _chunks(groups: pd.Series, size: int):
    """Row ranges of about ``size`` rows that never split a run of equal group values."""
    start, n = 0, len(groups)
    values = groups.to_numpy()
    while start < n:
        stop = min(start + size, n)
        while stop < n and values[stop] == values[stop - 1]:
            stop += 1
        yield start, stop
        start = stop


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

    Each crop comes from the image's own detection, else from the median box of the same
    person's detected photos (MTCNN often misses masked faces, and a person's 7 photos share one
    framing), else from the fixed fallback region; the index records which. A manifest without a
    ``person`` column (eval) has no person step. ``detector_factory`` is called only if some
    image is not in the cache. Returns the index.
    """
    n = len(manifest)
    groups = manifest["person"] if "person" in manifest else manifest["key"]
    records = []
    detector = None
    aspect = geometry.height / geometry.width
    workers = min(4, os.cpu_count() or 1)
    with npy_writer(out_npy, (n, geometry.height, geometry.width, 3)) as array, \
            ThreadPoolExecutor(max_workers=workers) as pool, \
            tqdm(total=n, desc=desc, unit="img", disable=None) as bar:
        chunks = list(_chunks(groups, batch_size))

        def decode(k: int):
            start, stop = chunks[k]
            return [pool.submit(read_rgb, root / p) for p in manifest["path"].iloc[start:stop]]

        # Decoding the next chunk (PIL releases the GIL) overlaps detecting the current one.
        pending = decode(0) if chunks else []
        for k, (start, stop) in enumerate(chunks):
            chunk = manifest.iloc[start:stop]
            images = [f.result() for f in pending]
            pending = decode(k + 1) if k + 1 < len(chunks) else []
            todo = [i for i, h in enumerate(chunk["sha256"]) if h not in cache.boxes]
            if todo:
                detector = detector or detector_factory()
                found = detect_boxes([images[i] for i in todo], detector, detector_settings.detect_scale)
                for i, hit in zip(todo, found, strict=True):
                    cache.boxes[chunk["sha256"].iloc[i]] = hit
            hits = [cache.boxes[h] for h in chunk["sha256"]]
            chunk_groups = list(groups.iloc[start:stop])
            by_person = person_boxes([b for b, _ in hits], chunk_groups) if "person" in manifest else {}
            for i, (im, row) in enumerate(zip(images, chunk.itertuples(index=False), strict=True)):
                box, prob = hits[i]
                if box is not None:
                    source, region = "detected", crop_region(box, geometry.margin, aspect)
                elif chunk_groups[i] in by_person:
                    source = "person"
                    region = crop_region(by_person[chunk_groups[i]], geometry.margin, aspect)
                else:
                    region = crop_region(fallback_box(im.size, geometry.fallback), 0.0, aspect)
                    source = "fallback"
                array[start + i] = cut(im, region, geometry.height, geometry.width)
                records.append({"key": row.key, "row": start + i, "sha256": row.sha256,
                                "source": source, "prob": round(prob, 6) if box is not None else np.nan,
                                **{c: round(float(v), 2) for c, v in zip(BOX_COLUMNS, region)}})
            bar.update(len(chunk))
    index = pd.DataFrame(records, columns=["key", "row", "sha256", "source", "prob", *BOX_COLUMNS])
    write_csv(index, out_index)
    cache.save()
    counts = index["source"].value_counts()
    log.info("%s: %d images: %s", desc, n,
             ", ".join(f"{counts.get(s, 0)} {s}" for s in SOURCES))
    return index


def run(
    train_manifest: Path,
    eval_manifest: Path,
    root: Path,
    out_dir: Path,
    cache_dir: Path,
    crop: dict,
    device: str = "cpu",
    sample_size: int = 48,
    max_sheet: int = 600,
) -> None:
    """The whole step: crops for train and eval images, with the same settings for both.

    Also writes two contact sheets: a fixed random sample of training crops, and every crop that
    did not come from its own detection (capped at ``max_sheet``, which the log then says).
    """
    from maskpipe.config import as_hw

    height, width = as_hw(crop["size"])
    fb = crop["fallback"]
    geometry = CropGeometry(height, width, crop["margin"],
                            (fb["center_x"], fb["center_y"], fb["width"], fb["height"]))
    settings = DetectorSettings(crop["detect_scale"], crop["min_face_size"], tuple(crop["thresholds"]))
    cache = BoxCache(cache_dir, settings)
    factory = lambda: make_detector(settings, device)  # noqa: E731
    indexes = {}
    for split, manifest_path in (("train", train_manifest), ("eval", eval_manifest)):
        manifest = read_csv(manifest_path, required=["key", "path", "sha256"],
                            dtype={"key": str, "person": str, "id": str})
        indexes[split] = crop_split(manifest, root, out_dir / f"{split}.npy", out_dir / f"{split}.csv",
                                    geometry, settings, cache, factory, crop["batch_size"],
                                    desc=f"crop {split}")
    _write_sheets(out_dir, indexes, sample_size, max_sheet)


def _write_sheets(out_dir: Path, indexes: dict[str, pd.DataFrame], sample_size: int, max_sheet: int) -> None:
    train = np.load(out_dir / "train.npy", mmap_mode="r")
    idx = indexes["train"]
    rng = np.random.default_rng(0)
    sample = np.sort(rng.choice(len(idx), size=min(sample_size, len(idx)), replace=False))
    write_bytes_if_changed(out_dir / "sample.png",
                           contact_sheet(train, sample, idx["source"].iloc[sample].tolist()))
    # Every crop that is not its own detection: train first, then eval, each in manifest order.
    missed = [(split, row, source) for split in ("train", "eval")
              for row, source in indexes[split].loc[indexes[split]["source"] != "detected",
                                                    ["row", "source"]].itertuples(index=False)]
    if len(missed) > max_sheet:
        log.warning("contact sheet shows the first %d of %d crops without their own detection",
                    max_sheet, len(missed))
        missed = missed[:max_sheet]
    arrays = {"train": train, "eval": np.load(out_dir / "eval.npy", mmap_mode="r")}
    thumbs = (np.stack([arrays[split][row] for split, row, _ in missed]) if missed
              else np.zeros((0, 1, 1, 3), np.uint8))
    write_bytes_if_changed(out_dir / "fallbacks.png",
                           contact_sheet(thumbs, range(len(missed)), [s for _, _, s in missed],
                                         empty_text="every face was detected"))
