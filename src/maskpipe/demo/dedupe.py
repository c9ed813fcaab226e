"""Duplicate face photos found before a face is given to a person: same bytes, or the same photo.

UTKFace stores some photos more than once under different names (and labels: one photo is
listed aged 53, 55 and 56), byte-identical or re-encoded, re-cropped, blurred or slightly
turned. Two persons made of one photo would put one face in train and eval, so every group of
copies keeps one photo.

Near copies are found by a perceptual hash (pHash: the signs of the lowest DCT frequencies of a
small grey copy against their median). No installed library gives one (``imagehash`` is not a
dependency; OpenCV's ``img_hash`` is in the contrib build only), so it is the few lines of
:func:`phash` on ``scipy.fft.dctn``, computed as ``imagehash.phash`` computes it. The usual
8x8 = 64-bit hash cannot tell UTKFace's faces apart: they are aligned crops, so different people
come as close as 4 bits while copies reach 6. A 16x16 = 256-bit hash separates them; on the
3,082 faces of ``../shared/realfaces/utkface``, every pair within 42 bits was the same photo
(checked by eye: re-encoded, blurred, shifted or turned a little) and the closest different
people were 48 bits apart; :data:`NEAR_BITS` sits between.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy.fft import dctn
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from tqdm import tqdm

#: Side of the hash's square of DCT frequencies: HASH_SIZE ** 2 bits.
HASH_SIZE = 16
#: Two photos whose hashes differ in at most this many of the 256 bits are the same photo.
NEAR_BITS = 44
#: Columns of :func:`find_duplicates`' table.
DUPLICATE_COLUMNS = ["file", "kept", "kind", "bits"]


def phash(image: Image.Image, size: int = HASH_SIZE) -> np.ndarray:
    """The perceptual hash of ``image``: ``size * size`` booleans.

    The image in grey at ``4 * size`` pixels square, its 2-D DCT-II, and each of the
    ``size x size`` lowest frequencies compared with their median (``imagehash.phash``).
    """
    grey = np.asarray(image.convert("L").resize((4 * size, 4 * size), Image.Resampling.LANCZOS), np.float64)
    low = dctn(grey, type=2)[:size, :size]
    return (low > np.median(low)).ravel()


def _near_pairs(hashes: np.ndarray, bits: int, chunk: int = 512) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, distance) of every pair i < j whose hashes differ in at most ``bits`` bits."""
    packed = np.packbits(hashes, axis=1)
    rows, cols, dists = [], [], []
    for start in range(0, len(packed), chunk):  # chunks of rows: n x n distances are not all held
        block = np.bitwise_count(packed[start:start + chunk, None, :] ^ packed[None, :, :]).sum(-1)
        i, j = np.nonzero(block <= bits)
        i = i + start
        keep = i < j
        rows.append(i[keep])
        cols.append(j[keep])
        dists.append(block[i[keep] - start, j[keep]])
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(dists)


def find_duplicates(paths: list[Path], names: list[str], bits: int = NEAR_BITS) -> pd.DataFrame:
    """The photos to drop so that no two kept photos are the same photo.

    Photos with the same bytes, or whose :func:`phash` differ in at most ``bits`` bits, are
    linked; of each linked group the photo with the smallest name is kept (so the choice
    depends neither on the order of the list nor on the seed).

    Args:
        paths: The photos.
        names: Their names (``labels.csv``'s ``file``), in the same order.
        bits: Largest hash distance of a near copy.

    Returns:
        One row per dropped photo: ``file``, ``kept`` (the photo of its group that stays),
        ``kind`` (``same bytes`` when its bytes equal the kept photo's, else ``near``) and
        ``bits`` (their hash distance), sorted by ``file``.
    """
    digests, hashes = [], []
    for path in tqdm(paths, desc="duplicate faces", unit="face", disable=None):  # on stderr, off if not a TTY
        data = Path(path).read_bytes()
        digests.append(hashlib.sha256(data).hexdigest())
        with Image.open(path) as im:
            hashes.append(phash(im))
    if not paths:
        return pd.DataFrame(columns=DUPLICATE_COLUMNS)
    hashes_arr = np.asarray(hashes)
    i, j, _ = _near_pairs(hashes_arr, bits)  # same bytes give the same hash: distance 0
    n = len(paths)
    _, group = connected_components(coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n)), directed=False)
    table = pd.DataFrame({"file": names, "group": group, "digest": digests, "row": range(n)})
    keeper = table.sort_values("file").drop_duplicates("group").set_index("group")
    table["kept_row"] = keeper.loc[table["group"], "row"].to_numpy()
    dropped = table[table["row"] != table["kept_row"]]
    kept = table.loc[dropped["kept_row"]]
    distance = np.bitwise_count(np.packbits(hashes_arr[dropped["row"]], axis=1)
                                ^ np.packbits(hashes_arr[dropped["kept_row"]], axis=1)).sum(1)
    same = dropped["digest"].to_numpy() == kept["digest"].to_numpy()
    out = pd.DataFrame({"file": dropped["file"].to_numpy(), "kept": kept["file"].to_numpy(),
                        "kind": np.where(same, "same bytes", "near"), "bits": distance.astype(int)})
    return out.sort_values("file").reset_index(drop=True)
