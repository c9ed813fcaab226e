"""Masks drawn from landmarks cover what each way of wearing them covers, and nothing far away."""

import numpy as np
import pytest
from PIL import Image

from maskpipe.faces.masks import STYLES, WEARS, Frame, MaskStyle, draw_mask, random_mask

# A face about 80 px between the eyes, upright, in the middle of a grey 384x512 photo.
POINTS = np.array([[152.0, 200.0], [232.0, 200.0], [192.0, 252.0], [160.0, 290.0], [224.0, 290.0]])
NOSE, MOUTH, EYE = (192, 252), (192, 292), (152, 200)
CHIN = (192, 290 + 60)  # 0.75 eye distances below the mouth


def _changed(style: str, wear: str, seed: int = 0) -> np.ndarray:
    grey = Image.new("RGB", (384, 512), (128, 128, 128))
    mask = MaskStyle(style, (30, 200, 40))  # a colour far from the grey
    out = draw_mask(grey, POINTS, mask, wear, np.random.default_rng(seed))
    return np.abs(np.asarray(out, int) - 128).sum(axis=2) > 30


@pytest.mark.parametrize("style", STYLES)
def test_each_way_of_wearing_covers_its_part_of_the_face(style):
    covered = {wear: _changed(style, wear) for wear in WEARS}
    at = lambda m, xy: bool(m[xy[1], xy[0]])  # noqa: E731
    assert at(covered["wear"], NOSE) and at(covered["wear"], MOUTH) and not at(covered["wear"], EYE)
    assert not at(covered["below_nose"], NOSE) and at(covered["below_nose"], MOUTH)
    assert not at(covered["chin"], MOUTH) and at(covered["chin"], CHIN)
    assert at(covered["mouth"], MOUTH) and not at(covered["mouth"], NOSE) and not at(covered["mouth"], CHIN)
    for wear, m in covered.items():
        assert not m[:120].any() and not m[450:].any(), wear  # forehead up and chest down untouched


def test_draw_mask_is_seeded_and_leaves_the_input_alone():
    grey = Image.new("RGB", (384, 512), (128, 128, 128))
    before = grey.tobytes()
    mask = random_mask(np.random.default_rng(3))
    a = draw_mask(grey, POINTS, mask, "wear", np.random.default_rng(1))
    b = draw_mask(grey, POINTS, mask, "wear", np.random.default_rng(1))
    c = draw_mask(grey, POINTS, mask, "wear", np.random.default_rng(2))
    assert a.tobytes() == b.tobytes() != c.tobytes() and grey.tobytes() == before


def test_frame_follows_a_turned_and_mirrored_face():
    theta = np.deg2rad(20)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    turned = (POINTS - POINTS[:2].mean(0)) @ rot.T + [100, 100]
    f = Frame.from_points(turned)
    assert f.d == pytest.approx(80) and f.mouth == pytest.approx(1.125)
    assert f.nose == pytest.approx((0.0, 0.65))
    mirrored = Frame.from_points(turned[[1, 0, 2, 4, 3]])  # eyes listed the other way round
    assert mirrored.nose == pytest.approx(f.nose) and np.allclose(mirrored.ex, f.ex)
    u, v = f.to_uv(*f.to_px([0.3], [0.9]).T)
    assert (u[0], v[0]) == pytest.approx((0.3, 0.9))
