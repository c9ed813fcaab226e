"""Crops of external labelled faces (:mod:`maskpipe.data.external`), made as the competition's.

The faces are cropped by :func:`maskpipe.crop.splits.crop_split` with the crop section's
geometry and detection passes (:func:`maskpipe.crop.splits.crop_setup`), each face its own
person: a face MTCNN misses takes the fixed fallback region, as a train photo would without a
detected photo of its person. Their labels are written beside the crops
(:func:`maskpipe.data.external.external_labels`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
from PIL import Image

from maskpipe.crop.placement import placement
from maskpipe.crop.splits import crop_setup, crop_split
from maskpipe.data.external import external_labels
from maskpipe.data.manifest import hash_images
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


def crop_external(faces: pd.DataFrame, out_crops: Path, out_index: Path, out_labels: Path, cache_dir: Path,
                  crop: dict, train_age_bounds: tuple[int, int], device: str = "cpu",
                  workers: int = 1) -> pd.DataFrame:
    """Crop every face of ``faces`` into ``out_crops`` (row = the table's order), index the
    crops (``out_index``, as the crop step's) and write their labels (``out_labels``).

    Every photo is decoded and hashed first, as the validate step checks the competition's
    (a photo that does not decode stops the step naming it).

    Args:
        faces: :data:`maskpipe.data.external.FACE_COLUMNS`.
        crop: The ``crop`` config section: the same geometry and detection as the competition's.
        train_age_bounds: ``labels.train_age_bounds``.
        cache_dir: The detection cache of these faces.

    Returns:
        The labels written.
    """
    shas = hash_images([Path(p) for p in faces["path"]], workers, "validate external")
    geometry, passes = crop_setup(crop, cache_dir, device)
    _check_sizes(faces, max(p.settings.min_face_size for p in passes))
    manifest = pd.DataFrame({"key": faces["key"], "path": faces["path"], "sha256": shas,
                             "person": faces["key"]})  # each face is a person of its own
    crop_split(manifest, Path("."), Path(out_crops), Path(out_index), geometry, passes, crop["batch_size"],
               desc="crop external", workers=workers, place=placement(crop))
    labels = external_labels(faces, train_age_bounds)
    write_csv(labels, out_labels)
    log.info("external: %d faces cropped, labels in %s", len(labels), out_labels)
    return labels
