"""The ``crop`` step: every train and eval image to a stored face crop, with the same settings."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from maskpipe.crop.detect import BOX_COLUMNS, BoxCache, DetectorSettings, detect_boxes, make_detector
from maskpipe.crop.geometry import CropGeometry, cut
from maskpipe.crop.placement import (SOURCES, Hit, Placement, group_hits, place_by_shoot, place_photo,
                                    placement, record)
from maskpipe.crop.sheet import contact_sheet
from maskpipe.images import look, read_rgb
from maskpipe.io import npy_writer, path_inside, read_csv, write_bytes_if_changed, write_csv

log = logging.getLogger(__name__)

#: The crop index: one row per manifest row, in its order.
INDEX_COLUMNS = ["key", "row", "sha256", "source", "prob", *BOX_COLUMNS, "shoot"]


@dataclass(frozen=True)
class DetectionPass:
    """One MTCNN pass: its settings, the cache of its boxes, and how to build its detector."""

    settings: DetectorSettings
    cache: BoxCache
    factory: Callable[[], Any]


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
    known: dict[str, Hit]  # final detections of these rows' images from the caches, by sha256
    shas: list[str]
    detect: list[str]  # the images this chunk detects: uncached, and not detected by an earlier chunk
    cached: list[dict]  # per pass, the cached (box, prob) of the images in ``detect``


class _Lazy:
    """A detector built on first use (the second pass may never be needed), once, for all threads."""

    def __init__(self, factory: Callable[[], Any]):
        self._factory, self._lock, self._value = factory, threading.Lock(), None

    def get(self) -> Any:
        with self._lock:
            if self._value is None:
                self._value = self._factory()
        return self._value


def _cached_hit(sha: str, passes: list[DetectionPass]) -> Hit | None:
    """The final detection of an image if every pass it needs is cached, else None."""
    for k, p in enumerate(passes, start=1):
        if sha not in p.cache.boxes:
            return None
        box, prob = p.cache.boxes[sha]
        if box is not None:
            return box, prob, k
    return None, float("nan"), 0


def _detect(images: dict, chunk: _Chunk, passes: list[DetectionPass],
            detectors: list[_Lazy]) -> tuple[dict[str, Hit], list[dict]]:
    """Run the passes over the chunk's images to detect: each later pass on what the earlier ones
    missed. Returns (final hit by sha256, new detections of each pass)."""
    hits, new, pending = {}, [], list(chunk.detect)
    for p, detector, cached in zip(passes, detectors, chunk.cached, strict=True):
        need = [h for h in pending if h not in cached]
        found = dict(zip(need, detect_boxes([images[h] for h in need], detector.get(),
                                            p.settings.detect_scale), strict=True)) if need else {}
        new.append(found)
        still = []
        for h in pending:
            box, prob = cached[h] if h in cached else found[h]
            if box is not None:
                hits[h] = (box, prob, len(new))
            else:
                still.append(h)
        pending = still
    hits.update((h, (None, float("nan"), 0)) for h in pending)
    return hits, new


def _crop_chunk(chunk: _Chunk, root: Path, geometry: CropGeometry, passes: list[DetectionPass],
                detectors: list[_Lazy], place: Placement, shared: dict[str, Future]):
    """Decode, detect what is not cached, place boxes and cut the crops.

    A train chunk places every photo (own box, second pass, person's box, fixed). An eval chunk
    places only first-pass detections and leaves the rest (``None`` records) until the shoots are
    known; it returns each photo's look for that. An image that is in several chunks (the same
    photo in two folders) is detected once, by the first chunk, which hands the box to the others
    through ``shared``: MTCNN's boxes depend a little on the rest of the batch, and two boxes for
    one image would make a rerun from the cache change a crop.
    Returns (crops, per-row records or None, hits, looks or None, new detections per pass)."""
    try:
        images = [read_rgb(root / p) for p in chunk.paths]
        by_sha = dict(zip(chunk.shas, images, strict=True))
        new_hits, new = _detect(by_sha, chunk, passes, detectors) if chunk.detect else ({}, [])
    except BaseException as e:  # the chunks waiting for boxes of this one fail too, never hang
        for h in chunk.detect:
            if h in shared:
                shared[h].set_exception(e)
        raise
    for h, hit in new_hits.items():
        if h in shared:
            shared[h].set_result(hit)
    hits = [chunk.known[h] if h in chunk.known else new_hits[h] if h in new_hits else shared[h].result()
            for h in chunk.shas]
    by_person = group_hits(hits, chunk.groups) if chunk.groups is not None else {}
    crops = np.zeros((len(images), geometry.height, geometry.width, 3), np.uint8)
    records: list[dict | None] = []
    for i, im in enumerate(images):
        if chunk.groups is None and hits[i][2] != 1:
            records.append(None)  # placed once the shoots are known
            continue
        group = chunk.groups[i] if chunk.groups is not None else ""
        source, region, prob = place_photo(hits[i], by_person.get(group), "person", im.size, geometry,
                                      place.min_iou)
        crops[i] = cut(im, region, geometry.height, geometry.width)
        records.append(record(source, region, prob, group))
    looks = ([look(im) for im in images] if chunk.groups is None and place.shoots is not None
             else None)
    return crops, records, hits, looks, new


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
    locally and inside Slurm jobs (:func:`maskpipe.devices.usable_cores`)."""
    from maskpipe.devices import usable_cores

    return usable_cores() + 1


def detector_passes(crop: dict, first: DetectorSettings | None = None) -> list[DetectorSettings]:
    """The detector settings of the ``crop`` config section: ``first`` (default: built from the
    section), and the second pass where ``crop.second_pass.enabled`` (the same settings but those
    the section gives, so a field of ``first`` the config does not hold, carries over)."""
    first = first or DetectorSettings(crop["detect_scale"], crop["min_face_size"], tuple(crop["thresholds"]))
    second = crop["second_pass"]
    if not second["enabled"]:
        return [first]
    again = dataclasses.replace(first, detect_scale=second["detect_scale"], min_face_size=second["min_face_size"],
                                thresholds=tuple(second["thresholds"]))
    return [first] if again == first else [first, again]  # the same settings would find nothing new


def crop_split(
    manifest: pd.DataFrame,
    root: Path,
    out_npy: Path,
    out_index: Path,
    geometry: CropGeometry,
    passes: list[DetectionPass],
    batch_size: int = 16,
    desc: str = "crop",
    workers: int = 1,
    place: Placement = Placement(),
) -> pd.DataFrame:
    """Crop every manifest image into ``out_npy`` (row order = manifest order) and index it.

    Each crop comes from the image's own detection by the first of ``passes`` (the others run
    on what it missed), else from the median box of the same person's detected photos (MTCNN
    often misses masked faces, and a person's 7 photos share one framing), or for eval (a manifest
    without a ``person`` column) of the same shoot's photos (``place.shoots``), else from the fixed
    fallback region; the index records which (column ``source``, see :data:`SOURCES`) and the
    person or shoot (``shoot``). A pass's detector is built only if some image needs it.
    ``workers`` threads crop chunks of ``batch_size`` images at once (torch and PIL release the
    GIL), sharing the detectors; the crops are the same for any number.
    """
    n = len(manifest)
    has_person = "person" in manifest
    groups = manifest["person"] if has_person else manifest["key"]
    shas = manifest["sha256"].tolist()
    chunks, claimed, shared = [], set(), {}  # shared: boxes one chunk detects for later chunks
    for start, stop in _chunks(groups, batch_size):
        part = shas[start:stop]
        known = {h: hit for h in dict.fromkeys(part) if (hit := _cached_hit(h, passes)) is not None}
        uncached = [h for h in dict.fromkeys(part) if h not in known]
        shared.update((h, Future()) for h in uncached if h in claimed and h not in shared)
        detect = [h for h in uncached if h not in claimed]
        claimed.update(detect)
        chunks.append(_Chunk(start, manifest["path"].iloc[start:stop].tolist(),
                             groups.iloc[start:stop].tolist() if has_person else None, known, part,
                             detect, [{h: p.cache.boxes[h] for h in detect if h in p.cache.boxes}
                                      for p in passes]))
    detectors = [_Lazy(p.factory) for p in passes]
    workers = max(1, min(workers, len(chunks)))
    records: list[dict | None] = []
    hits: list[Hit] = []
    looks: list[np.ndarray] = []
    with npy_writer(out_npy, (n, geometry.height, geometry.width, 3)) as array, \
            _one_torch_thread(), ThreadPoolExecutor(max_workers=workers) as pool, \
            tqdm(total=n, desc=desc, unit="img", disable=None) as bar:
        log.debug("%s: %d chunks on %d threads", desc, len(chunks), workers)
        results = _ordered_map(pool, lambda c: _crop_chunk(c, root, geometry, passes, detectors, place, shared),
                               chunks, ahead=2 * workers)
        for chunk, (crops, recs, chunk_hits, chunk_looks, new) in zip(chunks, results, strict=True):
            array[chunk.start:chunk.start + len(crops)] = crops
            for p, found in zip(passes, new):
                p.cache.boxes.update(found)
            records += recs
            hits += chunk_hits
            looks += chunk_looks or []
            bar.update(len(crops))
        if not has_person:
            place_by_shoot(manifest, root, array, records, hits, looks, geometry, place, pool)
    index = pd.DataFrame([{"key": key, "row": row, "sha256": sha, **rec} for row, (key, sha, rec)
                          in enumerate(zip(manifest["key"], shas, records, strict=True))],
                         columns=INDEX_COLUMNS)
    write_csv(index, out_index)
    for p in passes:
        p.cache.save()
    counts = index["source"].value_counts()
    log.info("%s: %d images: %s", desc, n, ", ".join(f"{counts.get(s, 0)} {s}" for s in SOURCES))
    return index


def crop_setup(crop: dict, cache_dir: Path, device: str = "cpu") -> tuple[CropGeometry, list[DetectionPass]]:
    """The crop geometry and the detection passes (with their box caches under ``cache_dir``)
    of the ``crop`` config section, on ``device``: what every set of photos is cropped with."""
    from maskpipe.config import as_hw

    height, width = as_hw(crop["size"])
    fb = crop["fallback"]
    geometry = CropGeometry(height, width, crop["margin"],
                            (fb["center_x"], fb["center_y"], fb["width"], fb["height"]))
    # the device type is in the cache key: MTCNN's boxes on CPU and CUDA differ in the last digits
    settings = DetectorSettings(crop["detect_scale"], crop["min_face_size"], tuple(crop["thresholds"]),
                                device.split(":")[0])
    passes = [DetectionPass(s, BoxCache(cache_dir, s), functools.partial(make_detector, s, device))
              for s in detector_passes(crop, settings)]  # the second pass keeps the device type
    return geometry, passes


def crop_splits(
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
    ``eval``, ``eval_index``, ``sample_sheet``, ``fallback_sheet``; :mod:`maskpipe.dag.table`).
    ``workers``: chunks cropped at once (default: :func:`default_workers`).
    """
    geometry, passes = crop_setup(crop, cache_dir, device)
    manifests = {}
    for split, manifest_path in (("train", train_manifest), ("eval", eval_manifest)):
        manifests[split] = read_csv(manifest_path, required=["key", "path", "sha256"],
                                    dtype={"key": str, "person": str, "id": str})
        for row, path in enumerate(manifests[split]["path"], start=2):
            path_inside(root, path, f"{manifest_path}: row {row}")
    indexes = {}
    for split, manifest in manifests.items():
        indexes[split] = crop_split(manifest, root, Path(outputs[split]), Path(outputs[f"{split}_index"]),
                                    geometry, passes, crop["batch_size"], desc=f"crop {split}",
                                    workers=workers or default_workers(), place=placement(crop))
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
