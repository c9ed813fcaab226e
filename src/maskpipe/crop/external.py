"""Crops of external labelled faces (:mod:`maskpipe.data.external`), made as the competition's.

The faces are cropped by :func:`maskpipe.crop.splits.crop_split` with the crop section's
geometry and detection passes (:func:`maskpipe.crop.splits.crop_setup`), each face its own
person: a face MTCNN misses takes the fixed fallback region, as a train photo would without a
detected photo of its person. Their labels are written beside the crops
(:func:`maskpipe.data.external.external_labels`). With ``external.masks: drawn`` each face is
cropped three times: with a mask drawn on it as the demo sets draw them, worn and worn wrongly,
and as it is (:func:`draw_masks`).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from maskpipe.crop.placement import placement
from maskpipe.crop.splits import crop_setup, crop_split
from maskpipe.classes import MASK_NAMES
from maskpipe.data.external import NOT_WEAR, external_labels
from maskpipe.data.manifest import hash_images
from maskpipe.faces.landmarks import POINT_COLUMNS, find_landmarks
from maskpipe.faces.masks import WEARS, draw_mask, random_mask
from maskpipe.io import MaskpipeError, write_csv

log = logging.getLogger(__name__)


def _check_sizes(faces: pd.DataFrame, min_face_size: int) -> None:
    """Every photo at least ``min_face_size`` on its shorter side: MTCNN searches no scale of a
    smaller image (facenet-pytorch then raises on an empty list of boxes).

    Raises:
        MaskpipeError: naming the photo's labels.csv, row and size.
    """
    for folder, file, line, path in faces[["folder", "file", "line", "path"]].itertuples(index=False):
        with Image.open(path) as im:
            w, h = im.size
        if min(w, h) < min_face_size:
            raise MaskpipeError(f"{Path(folder) / 'labels.csv'}: row {line}: {file} is {w}x{h} pixels, smaller "
                                f"than crop.min_face_size ({min_face_size}) on a side: no face can be found "
                                "on it; enlarge the photos or lower crop.min_face_size")


def draw_masks(faces: pd.DataFrame, work: Path, landmark_cache: Path, seed: int = 0) -> pd.DataFrame:
    """Each face of ``faces`` in the three mask states, as the demo sets draw masks
    (:mod:`maskpipe.faces.masks`, from the face's own landmarks, :mod:`maskpipe.faces.landmarks`):
    a mask worn (``wear``), the same mask worn a wrong way (``incorrect``: below the nose, on the
    chin or over the mouth only) and the photo itself (``not wear``). The drawn photos are
    written to ``work`` as PNG. A face without landmarks (MTCNN found none) keeps its one
    unmasked row.

    Returns:
        ``faces``' columns plus ``face`` (the face's key) and ``mask``, three rows a face (its
        worn, wrong and unmasked photo, in that order; the unmasked one keeps the face's key).
    """
    marks = pd.concat([find_landmarks(Path(folder), group["file"].tolist(), landmark_cache).set_axis(group.index)
                       for folder, group in faces.groupby("folder", sort=False)])
    rows, missed = [], 0
    for i, face in enumerate(faces.itertuples(index=False)):
        base = {**face._asdict(), "face": face.key}
        pts = marks.iloc[i][POINT_COLUMNS].to_numpy(np.float64)
        if np.isnan(pts).any():
            missed += 1
        else:
            rng = np.random.default_rng([seed, i])
            with Image.open(face.path) as im:  # as the landmarks were found: no EXIF turn
                photo = im.convert("RGB")
            mask = random_mask(rng)
            for state, wear in ((0, "wear"), (1, str(rng.choice(WEARS[1:])))):
                path = work / f"{i}_{MASK_NAMES[state]}.png"
                draw_mask(photo, pts.reshape(5, 2), mask, wear, rng).save(path)
                rows.append({**base, "key": f"{face.key}#{MASK_NAMES[state]}", "path": str(path), "mask": state})
        rows.append({**base, "mask": NOT_WEAR})
    if missed:
        log.warning("external: no landmarks on %d of %d faces: they stay unmasked only", missed, len(faces))
    return pd.DataFrame(rows)


def crop_external(faces: pd.DataFrame, out_crops: Path, out_index: Path, out_labels: Path, cache_dir: Path,
                  crop: dict, train_age_bounds: tuple[int, int], masks: str = "none", device: str = "cpu",
                  workers: int = 1) -> pd.DataFrame:
    """Crop every face of ``faces`` into ``out_crops`` (row = the labels' order), index the
    crops (``out_index``, as the crop step's) and write their labels (``out_labels``).

    Every photo is decoded and hashed first, as the validate step checks the competition's
    (a photo that does not decode stops the step naming it).

    Args:
        faces: :data:`maskpipe.data.external.FACE_COLUMNS`.
        crop: The ``crop`` config section: the same geometry and detection as the competition's.
        train_age_bounds: ``labels.train_age_bounds``.
        masks: ``none``: each face once, "not wear"; ``drawn``: in all three states
            (:func:`draw_masks`), its three photos one person for the crop (a masked photo MTCNN
            misses takes the unmasked photo's box, as a competition photo its person's).
        cache_dir: The detection cache of these faces (and, with drawn masks, their landmarks).

    Returns:
        The labels written.
    """
    hash_images([Path(p) for p in faces["path"]], workers, "validate external")
    geometry, passes = crop_setup(crop, cache_dir, device)
    _check_sizes(faces, max(p.settings.min_face_size for p in passes))
    with tempfile.TemporaryDirectory(prefix="maskpipe-external-") as work:
        rows = (draw_masks(faces, Path(work), Path(cache_dir) / "landmarks.csv") if masks == "drawn"
                else faces.assign(face=faces["key"], mask=NOT_WEAR))
        shas = hash_images([Path(p) for p in rows["path"]], workers, "hash external")
        manifest = pd.DataFrame({"key": rows["key"], "path": rows["path"], "sha256": shas,
                                 "person": rows["face"]})  # each face is a person of its own
        crop_split(manifest, Path("."), Path(out_crops), Path(out_index), geometry, passes, crop["batch_size"],
                   desc="crop external", workers=workers, place=placement(crop))
    labels = external_labels(rows, train_age_bounds)
    write_csv(labels, out_labels)
    log.info("external: %d faces, %d crops (masks: %s), labels in %s", len(faces), len(labels), masks, out_labels)
    return labels
