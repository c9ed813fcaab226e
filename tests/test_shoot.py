"""A person's photo shoot: one background and light for seven photos, the person moving a little."""

import numpy as np
from PIL import Image

from maskpipe.classes import IMAGE_STEMS
from maskpipe.demo.shoot import plan_shoot, render

# Landmarks where MTCNN puts them on a UTKFace crop (200x200, the face filling it).
POINTS = np.array([[58.0, 62.0], [140.0, 62.0], [99.0, 102.0], [62.0, 141.0], [137.0, 141.0]])


def _face() -> Image.Image:
    y, x = np.mgrid[0:200, 0:200]
    skin = np.stack([180 + 0 * x, 140 + 0.1 * y, 120 + 0.1 * x], axis=2)
    return Image.fromarray(skin.astype(np.uint8))


def _photos(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shoot = plan_shoot(_face(), POINTS, 40, rng)
    return {stem: np.asarray(render(shoot, stem, rng), np.float32) for stem in IMAGE_STEMS}


def test_one_background_and_light_per_shoot_and_small_moves():
    photos = _photos(0)
    assert all(p.shape == (512, 384, 3) for p in photos.values())
    corner = {stem: p[:24, :24].mean((0, 1)) for stem, p in photos.items()}  # background only
    ref = corner["normal"]
    for stem, c in corner.items():  # exposure varies by a few percent between photos
        assert np.all(np.abs(c - ref) <= 0.06 * ref + 2), stem
    other = _photos(1)["normal"][:24, :24].mean((0, 1))
    assert np.abs(other - ref).max() > 10  # another person, another background
    # The person moves between photos: no two photos are the same, unmasked ones included.
    flat = [p.tobytes() for p in photos.values()]
    assert len(set(flat)) == len(flat)


def test_shoot_is_seeded():
    a, b = _photos(3), _photos(3)
    assert all(np.array_equal(a[s], b[s]) for s in IMAGE_STEMS)


def test_square_region_keeps_the_crop_beyond_the_face_oval():
    """A green patch in the crop's lower corner, outside the face oval (where a photo has its
    hair, ears or collar): the square keeps it in the person's layer, the oval does not. The
    rest of the shoot (background, light, masks) is drawn the same for both."""
    face = np.asarray(_face()).copy()
    face[166:178, 26:40] = (20, 200, 20)
    shoots = {r: plan_shoot(Image.fromarray(face), POINTS, 40, np.random.default_rng(5), r)
              for r in ("oval", "square")}

    def green(region: str) -> int:
        layer = np.asarray(shoots[region].layer, np.int32)
        patch = layer[200 + 166:200 + 178, 200 + 26:200 + 40]  # the crop sits one crop size in
        return int(((patch[..., 1] - patch[..., 0] > 80) & (patch[..., 3] > 200)).sum())

    assert green("square") > 0.8 * 12 * 14 and green("oval") == 0
    assert np.array_equal(shoots["oval"].background, shoots["square"].background)
    assert shoots["oval"].masks == shoots["square"].masks and shoots["oval"].centre.tolist() == \
        shoots["square"].centre.tolist()
