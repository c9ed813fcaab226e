"""Generate demo data in the competition's exact layout, from real portraits with drawn masks.

The portraits are the two that ship inside installed packages (matplotlib's Grace Hopper and
scikit-image's astronaut), so the demo needs no download. Each person is one portrait, warped,
tinted and cut out onto a background; masks are drawn from the face landmarks. Gender and age
group are painted as a forehead band (hue = gender, dark stripes = age group) that sits inside
any face crop, is never covered by a mask and is symmetric under horizontal flips.

With ``plant_errors`` > 0 some persons get a wrong label while their photos keep showing the
truth (see :mod:`maskpipe.demo.competition`). ``planted_errors.csv`` lists them, so
``maskpipe mislabels`` can be measured (``bench/mislabels.py``).
"""

from __future__ import annotations

import colorsys
import functools
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

from maskpipe.classes import IMAGE_STEMS, MASK_BY_STEM, OFFICIAL_AGE_BOUNDS, age_bin, encode
from maskpipe.demo.competition import (HEIGHT, PLANT_KINDS, PLANTED_COLUMNS, PLANTED_FILE, WIDTH, TrainWriter,
                                       check_out, finish, plant_plan, save_image, write_eval_tables)
from maskpipe.io import MaskpipeError

log = logging.getLogger(__name__)

__all__ = ["PLANTED_COLUMNS", "PLANTED_FILE", "PLANT_KINDS", "generate_demo"]
_VERSION = 1  # bump when the images change, so an old demo folder is not mistaken for this one

# Landmarks (x, y): left eye, right eye, nose, left and right mouth corner; and the face box
# (x0, y0, x1, y1). Measured once with facenet-pytorch 2.6.0
# ``MTCNN(keep_all=False).detect(img, landmarks=True)`` on the unmodified images.
_SOURCES = {
    "grace_hopper": (
        ((221.7, 192.2), (309.8, 186.1), (269.4, 239.2), (232.7, 279.6), (306.6, 275.9)),
        (174.4, 119.6, 355.6, 340.5),
    ),
    "astronaut": (
        ((205.0, 101.7), (246.8, 103.7), (224.7, 129.0), (201.7, 139.2), (245.3, 141.9)),
        (181.1, 62.2, 267.7, 172.1),
    ),
}
_WEAR_STEMS = [s for s in IMAGE_STEMS if MASK_BY_STEM[s] == 0]
_JITTER = 4  # pixels a person's photos are shifted against each other
_MASK_COLOURS = [(236, 236, 232), (172, 204, 232), (34, 34, 38), (128, 130, 134),
                 (214, 198, 170), (176, 214, 190), (60, 72, 100)]
_STRIPE_COLOUR = (236, 236, 232)
_BAND_HUES = (0.60, 0.93)  # male: blue, female: magenta-pink
_AGE_STRIPES = ((), (0.5,), (0.28, 0.72))  # positions across the band, per age group


@functools.cache
def _source(name: str) -> Image.Image:
    """The portrait as RGBA whose alpha is a soft head-and-shoulders cut-out."""
    if name == "grace_hopper":
        from matplotlib import cbook

        img = Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    else:
        from skimage import data

        img = Image.fromarray(data.astronaut())
    (le, re, _, lm, rm), _box = _SOURCES[name]
    d = float(np.hypot(re[0] - le[0], re[1] - le[1]))
    cx, cy = (le[0] + re[0]) / 2, (le[1] + re[1]) / 2
    chin = (lm[1] + rm[1]) / 2 + 0.75 * d
    matte = Image.new("L", img.size, 0)
    draw = ImageDraw.Draw(matte)
    draw.ellipse((cx - 1.35 * d, cy - 1.6 * d, cx + 1.35 * d, chin + 0.15 * d), fill=255)
    draw.rectangle((cx - 0.75 * d, cy, cx + 0.75 * d, chin + 1.2 * d), fill=255)
    draw.ellipse((cx - 3.3 * d, chin + 0.8 * d, cx + 3.3 * d, chin + 5.0 * d), fill=255)
    img.putalpha(matte.filter(ImageFilter.GaussianBlur(0.08 * d)))
    return img


def _person(rng: np.random.Generator, gender: int, age_group: int) -> dict:
    """Draw everything that stays fixed across one person's photos."""
    young, old = OFFICIAL_AGE_BOUNDS
    ages = [(18, young), (young, old), (old, old + 1)][age_group]  # the real >=60 group is all 60
    hue = _BAND_HUES[gender] + rng.uniform(-0.03, 0.03)
    band = colorsys.hsv_to_rgb(hue % 1.0, rng.uniform(0.6, 0.85), rng.uniform(0.75, 0.95))
    return {
        "age_group": age_group,
        "age": int(rng.integers(*ages)),
        "source": str(rng.choice(sorted(_SOURCES))),
        "flip": bool(rng.random() < 0.5),
        "face_height": rng.uniform(0.35, 0.50) * HEIGHT,
        # Face-box centre near the middle, a little high like the real photos; the crop step's
        # fixed fallback region (centre 0.5, 0.45, size 0.6) still holds most of the face.
        "centre": (WIDTH * rng.uniform(0.4, 0.6), HEIGHT * rng.uniform(0.38, 0.56)),
        "gain": rng.uniform(0.85, 1.15, size=3) * rng.uniform(0.8, 1.15),
        "tilt": rng.uniform(-4.0, 4.0),
        "background": rng.integers(40, 236, size=(2, 3)),  # top and bottom of a vertical gradient
        "band": tuple(int(255 * c) for c in band),
        "brow": [(50, 34, 24), (62, 56, 52), (228, 228, 222)][age_group],
        # (colour index, striped) for mask1..mask5, then for incorrect_mask
        "masks": [(int(rng.integers(len(_MASK_COLOURS))), bool(rng.random() < 0.25))
                  for _ in range(len(_WEAR_STEMS) + 1)],
        "quality": int(rng.integers(85, 96)),
    }


def _portrait(p: dict) -> tuple[Image.Image, np.ndarray]:
    """Person ``p``'s portrait warped and cut out onto the background, padded by ``_JITTER``.

    Returns the padded canvas and the five landmarks in its pixels. Warping once per person and
    shifting per photo keeps the generator fast (the warp is most of the cost of an image).
    """
    img = _source(p["source"])
    landmarks, box = _SOURCES[p["source"]]
    src_centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
    theta = np.deg2rad(p["tilt"])
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    flip = np.diag([-1.0 if p["flip"] else 1.0, 1.0])
    fwd = p["face_height"] / (box[3] - box[1]) * rot @ flip  # source -> canvas, about the face
    centre = np.asarray(p["centre"]) + _JITTER
    inv = np.linalg.inv(fwd)
    offset = src_centre - inv @ centre
    size = (WIDTH + 2 * _JITTER, HEIGHT + 2 * _JITTER)
    data = (inv[0, 0], inv[0, 1], offset[0], inv[1, 0], inv[1, 1], offset[1])
    face = img.transform(size, Image.Transform.AFFINE, data, Image.Resampling.BILINEAR)
    bg = np.linspace(p["background"][0], p["background"][1], size[1])
    canvas = Image.fromarray(bg[:, None, :].repeat(size[0], axis=1).astype(np.uint8))
    canvas.paste(face.convert("RGB").point(_lut(p["gain"])), mask=face.getchannel("A"))
    return canvas, (np.asarray(landmarks) - src_centre) @ fwd.T + centre


def _render(p: dict, base: Image.Image, pts: np.ndarray, stem: str, rng: np.random.Generator) -> Image.Image:
    """One photo of person ``p``: shift the portrait a little, draw the cues and the mask."""
    dx, dy = rng.integers(-_JITTER, _JITTER + 1, size=2)
    canvas = base.crop((_JITTER + dx, _JITTER + dy, _JITTER + dx + WIDTH, _JITTER + dy + HEIGHT))
    pts = pts - [_JITTER + dx, _JITTER + dy]
    le, re = sorted(pts[:2].tolist())  # a flip swaps the eyes
    mid, d = (np.add(le, re)) / 2, float(np.hypot(re[0] - le[0], re[1] - le[1]))
    ex = np.subtract(re, le) / d
    ey = np.array([-ex[1], ex[0]])  # points down the face

    def at(u, v) -> list[tuple[float, float]]:  # face frame (in eye distances) -> canvas pixels
        u, v = np.broadcast_arrays(np.asarray(u, float), np.asarray(v, float))
        return [tuple(q) for q in mid + d * (u[:, None] * ex + v[:, None] * ey)]

    draw = ImageDraw.Draw(canvas)
    u = np.linspace(-1.2, 1.2, 25)
    # Forehead band, inside any face crop and above any mask: hue = gender, stripes = age group.
    top, bottom = -1.0 + 0.1 * u**2, -0.45 + 0.1 * u**2
    draw.polygon(at(u, top) + at(u[::-1], bottom[::-1]), fill=p["band"])
    for frac in _AGE_STRIPES[p["age_group"]]:
        draw.line(at(u, top + frac * (bottom - top)), fill=(22, 22, 26), width=max(2, round(0.12 * d)))
    ub = np.linspace(0.18, 0.72, 8)
    for side in (-1, 1):  # eyebrows, white for the old group
        draw.line(at(side * ub, -0.3 - 0.12 * (1 - ((ub - 0.45) / 0.27) ** 2)), fill=p["brow"],
                  width=max(2, round(0.08 * d)))

    mask = MASK_BY_STEM[stem]
    if mask < 2:
        colour, striped = p["masks"][_WEAR_STEMS.index(stem) if mask == 0 else -1]
        colour = _MASK_COLOURS[colour]
        shade = tuple(int(c * 0.8) for c in colour)
        stripe = (150, 170, 200) if colour == _STRIPE_COLOUR else _STRIPE_COLOUR
        um = np.linspace(-1.05, 1.05, 25)
        nose_v, mouth_v = (((pts[2], (pts[3] + pts[4]) / 2) - mid) @ ey / d).tolist()
        # "wear" reaches up to just below the eyes; "incorrect" starts below the nose.
        top = (0.3 if mask == 0 else nose_v + 0.2) + 0.14 * um**2
        bottom = mouth_v + 0.95 - 0.62 * um**2
        for side in (-1, 1):  # ear loops
            draw.line(at([side * 1.05, side * 1.32], [top[0], top[0] - 0.15]), fill=shade, width=2)
            draw.line(at([side * 1.05, side * 1.32], [bottom[0], top[0] + 0.25]), fill=shade, width=2)
        draw.polygon(at(um, top) + at(um[::-1], bottom[::-1]), fill=colour, outline=shade, width=2)
        for i, frac in enumerate(np.linspace(0.25, 0.75, 7 if striped else 3)):  # pleats or stripes
            draw.line(at(um * 0.92, top + frac * (bottom - top)), fill=stripe if striped and i % 2 else shade,
                      width=max(2, round((0.1 if striped else 0.03) * d)))
    return canvas.point(_lut([rng.uniform(0.96, 1.04)] * 3))


def _lut(gains) -> list[int]:
    """A lookup table for ``Image.point`` that multiplies each RGB channel by its gain."""
    ramp = np.arange(256, dtype=np.float64)
    return np.concatenate([np.clip(np.rint(ramp * g), 0, 255) for g in gains]).astype(int).tolist()


def _labels(seed: int, group: int, index: int) -> tuple[int, int]:
    """(gender, age group) of a person: every block of 6 persons holds each combination once."""
    combo = int(np.random.default_rng([seed, 2 + group, index // 6]).permutation(6)[index % 6])
    return combo // 3, combo % 3


def generate_demo(out: Path, persons: int = 150, eval_images: int = 120, seed: int = 0,
                  plant_errors: float = 0.0) -> dict:
    """Write a demo data set in the competition's layout under ``out``.

    Writes ``train/train.csv``, ``train/images/<id>_<gender>_Asian_<age>/<stem>.<ext>``,
    ``eval/info.csv``, ``eval/images/<40 hex>.jpg``, ``demo_truth.csv`` (the true class of
    every eval image) and ``demo.json`` (the arguments, written last). Person ``i`` depends only
    on ``seed`` and ``i``, so a larger demo extends a smaller one with the same seed. With
    ``plant_errors``, ``planted_errors.csv`` lists the wrong labels planted (see the module).

    Args:
        out: Folder to create; may exist if empty or if it holds a demo made with these arguments.
        persons: Number of train persons (7 images each).
        eval_images: Number of eval images, each of a different person not in train.
        seed: Seed of every random choice.
        plant_errors: Share of the train persons (0..1) whose label is made wrong: a gender flip,
            an age moved to an adjacent group, or incorrect_mask/normal files exchanged.

    Returns:
        Counts: ``persons``, ``train_images``, ``eval_images``, ``planted`` (when planting), and
        ``skipped`` (True when ``out`` already held this demo).

    Raises:
        MaskpipeError: ``out`` exists and holds something else.
    """
    out = Path(out)
    if persons < 0 or eval_images < 0:
        raise MaskpipeError(f"demo: persons and eval_images must be >= 0, got {persons} and {eval_images}")
    plan = plant_plan(seed, persons, plant_errors)
    # The generator's name in the marker is the one sets were made under before the module
    # moved: a rename changes no photo, and a set made earlier must stay valid.
    params = {"generator": "maskpipe.data.demo", "version": _VERSION, "persons": persons,
              "eval_images": eval_images, "seed": seed}
    summary = {"persons": persons, "train_images": persons * len(IMAGE_STEMS), "eval_images": eval_images}
    if plant_errors:  # only then, so a clean demo's demo.json (and folder) stays what it was
        params["plant_errors"] = plant_errors
        summary["planted"] = len(plan)
    if check_out(out, params, f"persons={persons}, eval_images={eval_images}, seed={seed}"):
        return {**summary, "skipped": True}

    writer = TrainWriter(out, seed, plan)
    for i in tqdm(range(persons), desc="demo train persons", unit="person", disable=None):
        rng = np.random.default_rng([seed, 0, i])
        gender, age_group = _labels(seed, 0, i)
        p = _person(rng, gender, age_group)
        pid = f"{1 + 2 * i + int(rng.integers(2)):06d}"  # unique, increasing, with gaps like the real ids
        base, pts = _portrait(p)
        photos = {stem: _render(p, base, pts, stem, rng) for stem in IMAGE_STEMS}
        writer.person(i, pid, gender, p["age"], age_group, photos, p["quality"])
    writer.finish(planting=bool(plant_errors))

    truth = []
    kinds = list(IMAGE_STEMS)
    for j in tqdm(range(eval_images), desc="demo eval images", unit="image", disable=None):
        rng = np.random.default_rng([seed, 1, j])
        gender, age_group = _labels(seed, 1, j)
        p = _person(rng, gender, age_group)
        stem = kinds[int(rng.integers(len(kinds)))]  # 5/7 wear, 1/7 incorrect, 1/7 normal
        image_id = rng.bytes(20).hex() + ".jpg"
        img = _render(p, *_portrait(p), stem, rng)
        save_image(img, out / "eval" / "images" / image_id, "JPEG", "RGB", p["quality"])
        truth.append({"ImageID": image_id, "ans": int(encode(MASK_BY_STEM[stem], gender, age_bin(p["age"])))})
    write_eval_tables(out, pd.DataFrame(truth, columns=["ImageID", "ans"]))
    finish(out, params)
    log.info("wrote a demo of %d persons and %d eval images to %s", persons, eval_images, out)
    return {**summary, "skipped": False}
