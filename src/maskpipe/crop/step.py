"""The ``crop`` step: every train and eval image to a stored face crop, with the same settings."""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import os
from concurrent.futures import Future, ThreadPoolExecutor
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from maskpipe.crop.detect import BOX_COLUMNS, BoxCache, DetectorSettings, detect_boxes, make_detector
from maskpipe.crop.geometry import CropGeometry, crop_region, cut, fallback_box, person_boxes
from maskpipe.crop.sheet import contact_sheet
from maskpipe.images import read_rgb
from maskpipe.io import npy_writer, path_inside, read_csv, write_bytes_if_changed, write_csv

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


@dataclass(frozen=True)
class _Chunk:
    """One unit of work: consecutive manifest rows that never split a person."""

    start: int
    paths: list[str]
    groups: list[str] | None  # persons, or None for eval (no person step)
    known: dict  # cached detections of these rows' images: sha256 -> (box, prob)
    shas: list[str]
    detect: list[str]  # the images this chunk detects: uncached, and not detected by an earlier chunk


def _crop_chunk(chunk: _Chunk, root: Path, geometry: CropGeometry, scale: float, detector,
                shared: dict[str, Future]) -> tuple[np.ndarray, list[dict], dict]:
    """Decode, detect what is not cached, place boxes (own, person's, fixed) and cut the crops.

    An image that is in several chunks (the same photo in two folders) is detected once, by the
    first chunk, which hands the box to the others through ``shared``: MTCNN's boxes depend a
    little on the rest of the batch, and two boxes for one image would make a rerun from the cache
    change a crop. Returns (crops, per-row records, new detections by sha256)."""
    todo = chunk.detect
    try:
        images = [read_rgb(root / p) for p in chunk.paths]
        new = dict(zip(todo, detect_boxes([images[chunk.shas.index(h)] for h in todo], detector, scale),
                       strict=True)) if todo else {}
    except BaseException as e:  # the chunks waiting for boxes of this one fail too, never hang
        for h in todo:
            if h in shared:
                shared[h].set_exception(e)
        raise
    for h, hit in new.items():
        if h in shared:
            shared[h].set_result(hit)
    hits = [chunk.known[h] if h in chunk.known else new[h] if h in new else shared[h].result()
            for h in chunk.shas]
    by_person = person_boxes([b for b, _ in hits], chunk.groups) if chunk.groups is not None else {}
    aspect = geometry.height / geometry.width
    crops = np.empty((len(images), geometry.height, geometry.width, 3), np.uint8)
    records = []
    for i, im in enumerate(images):
        box, prob = hits[i]
        if box is not None:
            source, region = "detected", crop_region(box, geometry.margin, aspect)
        elif chunk.groups is not None and chunk.groups[i] in by_person:
            source, region = "person", crop_region(by_person[chunk.groups[i]], geometry.margin, aspect)
        else:
            source, region = "fallback", crop_region(fallback_box(im.size, geometry.fallback), 0.0, aspect)
        crops[i] = cut(im, region, geometry.height, geometry.width)
        records.append({"source": source, "prob": round(prob, 6) if box is not None else np.nan,
                        **{c: round(float(v), 2) for c, v in zip(BOX_COLUMNS, region)}})
    return crops, records, new


@contextlib.contextmanager
def _one_torch_thread():
    """Torch on one thread while the step runs: several chunks at once, one per core, beat one
    chunk at a time on many intra-op threads (facenet's per-box Python loops and PIL's decode
    leave cores idle), and the float sums, so the boxes to the last bit, then do not depend on
    the number of workers."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _ordered_map(pool: ThreadPoolExecutor, fn, items: list, ahead: int):
    """``pool.map`` that keeps at most ``ahead`` results in flight (bounded memory), in order."""
    pending: collections.deque = collections.deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) > ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def default_workers() -> int:
    """Chunks cropped at once: the job's CPU budget plus one that keeps the cores busy while
    another thread holds the GIL (measured on 2 cores: 3 workers 343 img/s, 2 workers 300 img/s).

    The budget is the usable cores (CPU affinity: Slurm's and taskset's binding), capped by
    ``OMP_NUM_THREADS`` where set: Snakemake sets it to the rule's ``threads`` for every job,
    locally and inside Slurm jobs."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        cores = os.cpu_count() or 1
    budget = os.environ.get("OMP_NUM_THREADS", "")
    if budget.isdigit() and int(budget) > 0:
        cores = min(cores, int(budget))
    return cores + 1


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
    workers: int = 1,
) -> pd.DataFrame:
    """Crop every manifest image into ``out_npy`` (row order = manifest order) and index it.

    Each crop comes from the image's own detection, else from the median box of the same
    person's detected photos (MTCNN often misses masked faces, and a person's 7 photos share one
    framing), else from the fixed fallback region; the index records which. A manifest without a
    ``person`` column (eval) has no person step. ``detector_factory`` is called only if some
    image is not in the cache. ``workers`` threads crop chunks of ``batch_size`` images at once
    (torch and PIL release the GIL), sharing one detector; the crops are the same for any number.
    """
    n = len(manifest)
    has_person = "person" in manifest
    groups = manifest["person"] if has_person else manifest["key"]
    shas = manifest["sha256"].tolist()
    chunks, claimed, shared = [], set(), {}  # shared: boxes one chunk detects for later chunks
    for start, stop in _chunks(groups, batch_size):
        uncached = [h for h in dict.fromkeys(shas[start:stop]) if h not in cache.boxes]
        shared.update((h, Future()) for h in uncached if h in claimed and h not in shared)
        detect = [h for h in uncached if h not in claimed]
        claimed.update(detect)
        chunks.append(_Chunk(start, manifest["path"].iloc[start:stop].tolist(),
                             groups.iloc[start:stop].tolist() if has_person else None,
                             {h: cache.boxes[h] for h in shas[start:stop] if h in cache.boxes},
                             shas[start:stop], detect))
    detector = detector_factory() if claimed else None
    workers = max(1, min(workers, len(chunks)))
    scale = detector_settings.detect_scale
    records = []
    with npy_writer(out_npy, (n, geometry.height, geometry.width, 3)) as array, \
            _one_torch_thread(), ThreadPoolExecutor(max_workers=workers) as pool, \
            tqdm(total=n, desc=desc, unit="img", disable=None) as bar:
        log.debug("%s: %d chunks on %d threads", desc, len(chunks), workers)
        results = _ordered_map(pool, lambda c: _crop_chunk(c, root, geometry, scale, detector, shared),
                               chunks, ahead=2 * workers)
        for chunk, (crops, recs, new) in zip(chunks, results, strict=True):
            array[chunk.start:chunk.start + len(crops)] = crops
            cache.boxes.update(new)
            keys = manifest["key"].iloc[chunk.start:chunk.start + len(crops)]
            for i, (rec, key, sha) in enumerate(zip(recs, keys, chunk.shas, strict=True)):
                records.append({"key": key, "row": chunk.start + i, "sha256": sha, **rec})
            bar.update(len(crops))
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
    outputs: Mapping[str, Path],
    cache_dir: Path,
    crop: dict,
    device: str = "cpu",
    sample_size: int = 48,
    max_sheet: int = 600,
    workers: int | None = None,
) -> None:
    """The whole step: crops for train and eval images, with the same settings for both.

    Also writes two contact sheets: a fixed random sample of training crops, and every crop that
    did not come from its own detection (capped at ``max_sheet``, which the log then says).
    ``outputs``: where each file goes, by the step table's names (``train``, ``train_index``,
    ``eval``, ``eval_index``, ``sample_sheet``, ``fallback_sheet``; :mod:`maskpipe.pipeline`).
    ``workers``: chunks cropped at once (default: :func:`default_workers`).
    """
    from maskpipe.config import as_hw

    height, width = as_hw(crop["size"])
    fb = crop["fallback"]
    geometry = CropGeometry(height, width, crop["margin"],
                            (fb["center_x"], fb["center_y"], fb["width"], fb["height"]))
    settings = DetectorSettings(crop["detect_scale"], crop["min_face_size"], tuple(crop["thresholds"]),
                                device.split(":")[0])  # issue 15: the device type is in the cache key
    cache = BoxCache(cache_dir, settings)
    factory = functools.partial(make_detector, settings, device)
    manifests = {}
    for split, manifest_path in (("train", train_manifest), ("eval", eval_manifest)):
        manifests[split] = read_csv(manifest_path, required=["key", "path", "sha256"],
                                    dtype={"key": str, "person": str, "id": str})
        for row, path in enumerate(manifests[split]["path"], start=2):
            path_inside(root, path, f"{manifest_path}: row {row}")
    indexes = {}
    for split, manifest in manifests.items():
        indexes[split] = crop_split(manifest, root, Path(outputs[split]), Path(outputs[f"{split}_index"]),
                                    geometry, settings, cache, factory, crop["batch_size"],
                                    desc=f"crop {split}", workers=workers or default_workers())
    _write_sheets(outputs, indexes, sample_size, max_sheet)


def _write_sheets(outputs: Mapping[str, Path], indexes: dict[str, pd.DataFrame], sample_size: int,
                  max_sheet: int) -> None:
    train = np.load(outputs["train"], mmap_mode="r")
    idx = indexes["train"]
    rng = np.random.default_rng(0)
    sample = np.sort(rng.choice(len(idx), size=min(sample_size, len(idx)), replace=False))
    write_bytes_if_changed(Path(outputs["sample_sheet"]),
                           contact_sheet(train, sample, idx["source"].iloc[sample].tolist()))
    # Every crop that is not its own detection: train first, then eval, each in manifest order.
    missed = [(split, row, source) for split in ("train", "eval")
              for row, source in indexes[split].loc[indexes[split]["source"] != "detected",
                                                    ["row", "source"]].itertuples(index=False)]
    if len(missed) > max_sheet:
        log.warning("contact sheet shows the first %d of %d crops without their own detection",
                    max_sheet, len(missed))
        missed = missed[:max_sheet]
    arrays = {"train": train, "eval": np.load(outputs["eval"], mmap_mode="r")}
    thumbs = (np.stack([arrays[split][row] for split, row, _ in missed]) if missed
              else np.zeros((0, 1, 1, 3), np.uint8))
    write_bytes_if_changed(Path(outputs["fallback_sheet"]),
                           contact_sheet(thumbs, range(len(missed)), [s for _, _, s in missed],
                                         empty_text="every face was detected"))
