"""Duplicate face photos: same bytes and near copies found, one of each group kept.

Made-up photos (random fields with detail at every scale, as photos have) need no data; the
threshold is also checked on real UTKFace pairs from ../shared/realfaces/ (skipped, saying why,
where it is absent).
"""

from pathlib import Path

import numpy as np
import pytest
from conftest import UTKFACE
from PIL import Image, ImageFilter

from maskpipe.demo.dedupe import NEAR_BITS, find_duplicates, phash


def _photo(seed: int) -> Image.Image:
    """A 200x200 random colour field with detail at every scale, as a photo has (a field smooth
    at one scale only would leave the hash's higher frequencies to noise)."""
    rng = np.random.default_rng(seed)
    field = sum(np.asarray(Image.fromarray(rng.integers(0, 256, size=(n, n, 3), dtype=np.uint8)).resize(
        (200, 200), Image.Resampling.BICUBIC), np.float64) * 4 / n for n in (4, 8, 16, 32, 64))
    return Image.fromarray((field / field.max() * 255).astype(np.uint8))


def _save(img: Image.Image, path: Path, **kwargs) -> Path:
    img.save(path, "JPEG", **kwargs)
    return path


def test_same_bytes_and_near_copies_dropped_smallest_name_kept(tmp_path):
    paths = {f"p{i}.jpg": _save(_photo(i), tmp_path / f"p{i}.jpg", quality=95) for i in range(6)}
    # p1's bytes under two more names; p3 re-encoded, blurred and shifted by 2 px; p0 darker
    for name in ("a_copy.jpg", "z_copy.jpg"):
        paths[name] = tmp_path / name
        paths[name].write_bytes(paths["p1.jpg"].read_bytes())
    near = Image.open(paths["p3.jpg"]).filter(ImageFilter.GaussianBlur(1.5)).transform(
        (200, 200), Image.Transform.AFFINE, (1, 0, 2, 0, 1, 0))
    paths["q3.jpg"] = _save(near, tmp_path / "q3.jpg", quality=60)
    paths["q0.jpg"] = _save(Image.open(paths["p0.jpg"]).point(lambda v: int(v * 0.8)), tmp_path / "q0.jpg")
    names = list(paths)
    dropped = find_duplicates([paths[n] for n in names], names)
    assert list(dropped.columns) == ["file", "kept", "kind", "bits"]
    assert dropped.set_index("file")[["kept", "kind"]].to_dict("index") == {
        "p1.jpg": {"kept": "a_copy.jpg", "kind": "same bytes"},  # the smallest name of the group stays
        "z_copy.jpg": {"kept": "a_copy.jpg", "kind": "same bytes"},
        "q0.jpg": {"kept": "p0.jpg", "kind": "near"},
        "q3.jpg": {"kept": "p3.jpg", "kind": "near"}}
    assert (dropped.loc[dropped["kind"] == "same bytes", "bits"] == 0).all()
    assert dropped.loc[dropped["kind"] == "near", "bits"].between(1, NEAR_BITS).all()
    # the same answer whatever the order of the list
    order = names[::-1]
    again = find_duplicates([paths[n] for n in order], order)
    assert again.equals(dropped)
    # distinct photos are far apart: no pair of p0..p5 is linked
    hashes = [phash(Image.open(paths[f"p{i}.jpg"])) for i in range(6)]
    assert min((a != b).sum() for i, a in enumerate(hashes) for b in hashes[i + 1:]) > NEAR_BITS


def test_no_photos_no_duplicates():
    assert find_duplicates([], []).empty


def test_threshold_on_real_utkface_pairs():
    """The farthest near copy found in the shared folder (the same photo of an 85-year-old,
    re-cropped) is linked; the closest two different people (48 bits apart) are not."""
    if not (UTKFACE / "labels.csv").is_file():
        pytest.skip(f"{UTKFACE.resolve()} is absent: the real faces are research-only and live beside the repo")
    pairs = {("85_0_0_20170111210457043.jpg", "85_0_0_20170111210640890.jpg"): True,
             ("49_1_1_20170104005312671.jpg", "49_1_1_20170109220352923.jpg"): True,
             ("18_1_0_20170109214700491.jpg", "22_1_3_20170104231706746.jpg"): False}
    for (a, b), same in pairs.items():
        dropped = find_duplicates([UTKFACE / "images" / a, UTKFACE / "images" / b], [a, b])
        assert (dropped["file"].tolist() == [b]) if same else dropped.empty, (a, b, dropped)
