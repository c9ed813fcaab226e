"""Face landmarks of a folder of labelled face photos, found once with MTCNN and cached.

The real-faces generator (:mod:`maskpipe.demo.realfaces`) draws masks from each face's own eyes,
nose and mouth corners. Finding them is the slow part (MTCNN, ~20 ms a face), so they are kept
in a CSV keyed by the photo's content hash: a rerun, or another output folder made from the same
faces, detects nothing again.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from maskpipe.data.external import face_path
from maskpipe.io import MaskpipeError, write_csv

log = logging.getLogger(__name__)

#: Landmark columns: left eye, right eye, nose, left and right mouth corner, then the face box.
POINTS = ("le", "re", "nose", "lm", "rm")
POINT_COLUMNS = [f"{p}_{a}" for p in POINTS for a in "xy"]
BOX_COLUMNS = ["box_x1", "box_y1", "box_x2", "box_y2"]
CACHE_COLUMNS = ["sha1", *POINT_COLUMNS, *BOX_COLUMNS, "prob"]
# UTKFace crops are 200x200 with the face filling the frame; MTCNN misses faces that touch the
# border, so each photo is detected on a canvas padded by this share of its size per side.
_PAD = 0.25
# Detected on a half-size copy: the faces are ~90 px there, and it is ~4x faster than at full
# size with min_face_size 40 (landmarks move by about a pixel).
# The cache is keyed by content only: delete it after changing these three.
_SCALE = 0.5
_MIN_FACE = 40
_BATCH = 32


def face_paths(faces_dir: Path, files: list[str]) -> list[Path]:
    """:func:`face_path` of each of ``files``.

    Raises:
        MaskpipeError: a listed photo is missing (says how many and names one).
    """
    paths = [face_path(faces_dir, f) for f in files]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise MaskpipeError(f"{faces_dir / 'labels.csv'}: {len(missing)} listed photos are missing, "
                            f"e.g. {missing[0]}")
    return paths


def _sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def _padded(path: Path) -> tuple[Image.Image, tuple[int, int]]:
    """The photo on a canvas of its mean colour, and the offset of its top-left corner."""
    with Image.open(path) as im:
        im = im.convert("RGB")
    w, h = im.size
    px, py = round(_PAD * w), round(_PAD * h)
    canvas = Image.new("RGB", (w + 2 * px, h + 2 * py), tuple(int(c) for c in np.asarray(im).mean((0, 1))))
    canvas.paste(im, (px, py))
    small = canvas.resize((round(canvas.width * _SCALE), round(canvas.height * _SCALE)), Image.Resampling.BILINEAR)
    return small, (px, py)


def _detect(paths: list[Path]) -> list[np.ndarray | None]:
    """Per photo: [10 landmark coordinates, 4 box coordinates, probability], or None."""
    import torch
    from facenet_pytorch import MTCNN

    mtcnn = MTCNN(min_face_size=_MIN_FACE, select_largest=True, keep_all=False, device="cpu")
    out: list[np.ndarray | None] = [None] * len(paths)
    # On stderr, and off where it is not a terminal (disable=None), as the crop step's bar.
    with torch.inference_mode(), tqdm(total=len(paths), desc="face landmarks", unit="face", disable=None) as bar:
        for start in range(0, len(paths), _BATCH):  # a batch at a time: the photos are not all held
            padded = {i: _padded(paths[i]) for i in range(start, min(start + _BATCH, len(paths)))}
            by_size: dict[tuple[int, int], list[int]] = defaultdict(list)  # detect() needs one size
            for i, (image, _) in padded.items():
                by_size[image.size].append(i)
            for idx in by_size.values():
                boxes, probs, points = mtcnn.detect([padded[i][0] for i in idx], landmarks=True)
                for i, b, p, pts in zip(idx, boxes, probs, points, strict=True):
                    if b is None or len(b) == 0:
                        continue
                    shift = np.asarray(padded[i][1], dtype=np.float64)
                    lm = np.asarray(pts[0], dtype=np.float64).reshape(5, 2) / _SCALE - shift
                    box = np.asarray(b[0], dtype=np.float64).reshape(2, 2) / _SCALE - shift
                    prob = float(np.asarray(p, dtype=np.float64).reshape(-1)[0])
                    out[i] = np.concatenate([lm.ravel(), box.ravel(), [prob]])
            bar.update(len(padded))
    return out


def find_landmarks(faces_dir: Path, files: list[str], cache: Path) -> pd.DataFrame:
    """Landmarks of each face photo, indexed by ``file``; rows without a face are NaN.

    Args:
        faces_dir: Folder of ``labels.csv`` (photos beside it or in ``images/``).
        files: Photo names as in ``labels.csv``.
        cache: CSV of earlier detections by content hash; created or extended.

    Returns:
        One row per file: ``POINT_COLUMNS`` (pixels of the photo), ``BOX_COLUMNS`` and ``prob``.

    Raises:
        MaskpipeError: a listed photo is missing.
    """
    paths = face_paths(faces_dir, files)
    hashes = [_sha1(p) for p in paths]
    known = pd.read_csv(cache).set_index("sha1") if Path(cache).is_file() else pd.DataFrame(
        columns=CACHE_COLUMNS).set_index("sha1")
    todo = sorted({h: i for i, h in enumerate(hashes) if h not in known.index}.items())
    if todo:
        log.info("finding landmarks of %d faces (cached in %s)", len(todo), cache)
        found = _detect([paths[i] for _, i in todo])
        rows = [[h, *(v if v is not None else [np.nan] * (len(CACHE_COLUMNS) - 1))]
                for (h, _), v in zip(todo, found, strict=True)]
        new = pd.DataFrame(rows, columns=CACHE_COLUMNS).set_index("sha1")
        known = pd.concat([known, new]) if len(known) else new
        write_csv(known.sort_index().reset_index(), cache)
    result = known.loc[hashes, CACHE_COLUMNS[1:]].astype(np.float64)
    result.index = pd.Index(files, name="file")
    return result
