"""One person's photo shoot: a real face placed in 384x512 portraits, seven photos with masks.

A shoot fixes the background, the framing, the light and the person's masks; between its photos
the person moves a little (shift, turn, distance), as in the competition's photos. The face (a
tight crop, e.g. UTKFace's 200x200) gets a head of hair behind it, a neck and shoulders below it,
so the portrait has a head-and-shoulders outline like the real ones; of the crop, the face's
oval is kept, or its whole square (``region``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from maskpipe.classes import IMAGE_STEMS, MASK_BY_STEM
from maskpipe.demo.competition import HEIGHT, WIDTH
from maskpipe.faces.masks import MaskStyle, draw_mask, random_mask

_WRONG = ("below_nose", "chin", "mouth")
_WEAR_STEMS = [s for s in IMAGE_STEMS if MASK_BY_STEM[s] == 0]
_HAIR = [(22, 18, 16), (38, 28, 22), (58, 40, 28), (86, 62, 42), (120, 92, 62), (168, 136, 90)]
_GREYS = [(120, 118, 116), (160, 158, 154), (196, 194, 190)]


@dataclass
class Shoot:
    """What stays fixed across one person's photos."""

    background: np.ndarray  # (HEIGHT, WIDTH, 3) uint8
    layer: Image.Image  # RGBA: face, hair, neck, shoulders
    points: np.ndarray  # (5, 2) landmarks in ``layer`` pixels
    anchor: np.ndarray  # the layer point placed at ``centre`` (between the eyes)
    scale: float  # layer pixels -> photo pixels
    centre: np.ndarray  # photo pixels
    tilt: float  # degrees
    side: float  # -1..1, where the light comes from
    masks: list[MaskStyle]  # one per mask photo (people own a few masks and repeat them)
    wrong: MaskStyle
    wrong_way: str
    quality: int


def _background(rng: np.random.Generator) -> np.ndarray:
    """A gradient, a wall over a floor, or a soft texture, in room-like colours."""
    kind = int(rng.integers(3))
    a, b = rng.integers(40, 236, size=(2, 3)).astype(np.float32)
    if kind == 0:
        t = np.linspace(0, 1, HEIGHT, dtype=np.float32)[:, None, None]
        bg = np.broadcast_to(a + t * (b - a), (HEIGHT, WIDTH, 3))
    elif kind == 1:
        split = int(rng.uniform(0.55, 0.85) * HEIGHT)
        bg = np.empty((HEIGHT, WIDTH, 3), np.float32)
        bg[:split], bg[split:] = a, b
        bg[split - 2:split + 2] = (a + b) / 3  # a skirting line
    else:
        small = rng.normal(0, 1, size=(8, 6, 1)).astype(np.float32)
        field = np.asarray(Image.fromarray(small[..., 0]).resize((WIDTH, HEIGHT), Image.Resampling.BICUBIC))
        bg = a + np.clip(field[..., None], -2, 2) * (b - a) * 0.25
    noise = rng.normal(0, 3, size=(HEIGHT, WIDTH, 1)).astype(np.float32)
    return np.clip(bg + noise, 0, 255).astype(np.uint8)


def _layer(face: Image.Image, pts: np.ndarray, age: int, rng: np.random.Generator,
           region: str = "oval") -> tuple[Image.Image, np.ndarray]:
    """Face crop with hair behind, neck and shoulders below, as RGBA; and the landmarks there.

    ``region``: ``oval`` keeps the face's oval; ``square`` the crop's whole square (on a tight
    crop such as UTKFace's: side and long hair beside the jaw, ears, and the source photo's
    background in the corners), faded out at its edges. Both lie on the same drawn head of hair.
    """
    face = face.convert("RGB")
    w, h = face.size
    arr = np.asarray(face)
    pad_x, pad_top, pad_bottom = w, h, 2 * h  # room for tall hair above, shoulders below
    size = (w + 2 * pad_x, h + pad_top + pad_bottom)
    pts = np.asarray(pts, np.float64) + [pad_x, pad_top]
    d = float(np.hypot(*(pts[1] - pts[0])))
    eyes = (pts[0] + pts[1]) / 2
    mouth_y = (pts[3, 1] + pts[4, 1]) / 2
    chin_y = mouth_y + 0.75 * d
    grey = rng.random() < np.clip((age - 45) / 30, 0, 0.8)  # more grey hair with age
    hair = np.asarray(_GREYS[int(rng.integers(len(_GREYS)))] if grey else _HAIR[int(rng.integers(len(_HAIR)))])
    hair = hair * rng.uniform(0.85, 1.15)
    # Skin from below each eye (cheeks), where the landmarks say the face is.
    cheeks = [(np.asarray(pts[i]) - [pad_x, pad_top] + [0, 0.35 * d]).astype(int) for i in (0, 1)]
    r = max(2, int(0.08 * d))
    skin = np.median(np.concatenate([arr[max(0, y - r):y + r, max(0, x - r):x + r].reshape(-1, 3)
                                     for x, y in cheeks]), axis=0)
    clothes = tuple(int(c) for c in rng.integers(20, 230, size=3))

    layer = Image.new("RGBA", size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    cx = eyes[0]
    # Shoulders (the top of two ellipses shows), a neck in the face's shadow, hair behind.
    draw.ellipse((cx - 1.7 * d, chin_y + 0.5 * d, cx + 1.7 * d, chin_y + 6 * d), fill=(*clothes, 255))
    draw.ellipse((cx - 3.6 * d, chin_y + 0.9 * d, cx + 3.6 * d, chin_y + 6 * d), fill=(*clothes, 255))
    draw.rectangle((cx - 0.62 * d, mouth_y, cx + 0.62 * d, chin_y + 1.0 * d),
                   fill=(*(int(c * 0.85) for c in skin), 255))
    # Short, full or long hair: the head's outline differs from person to person. Drawn for
    # both regions, so the rest of the shoot's draws (light, masks, moves) match between them.
    half, top, low = rng.uniform(1.3, 1.6), rng.uniform(1.6, 2.1), rng.uniform(-0.3, 1.2)
    draw.ellipse((cx - half * d, eyes[1] - top * d, cx + half * d, mouth_y + low * d),
                 fill=(*(int(c) for c in np.clip(hair, 0, 255)), 255))
    face_rgba = face.copy()
    face_rgba.putalpha(_matte(w, h, region))
    layer.alpha_composite(face_rgba, (pad_x, pad_top))
    return layer, pts


def _matte(w: int, h: int, region: str) -> Image.Image:
    """Alpha of the face crop: its oval, or its whole square, faded out at the borders so the
    hair (drawn or its own), the neck and the background take over."""
    if region == "square":
        # 1 inside, falling smoothly to 0 over the outer 12% of each side.
        ramp = [np.clip(np.minimum(t, 1 - t) / 0.12, 0, 1) for t in (np.linspace(0, 1, h), np.linspace(0, 1, w))]
        ramp = [r * r * (3 - 2 * r) for r in ramp]
        return Image.fromarray((255 * np.outer(*ramp)).astype(np.uint8))
    if region != "oval":
        raise ValueError(f"face region must be 'oval' or 'square', got {region!r}")
    matte = Image.new("L", (w, h), 0)
    ImageDraw.Draw(matte).ellipse((0.06 * w, 0.02 * h - 0.3 * h, 0.94 * w, 1.04 * h), fill=255)
    matte = np.asarray(matte.filter(ImageFilter.GaussianBlur(0.04 * w)), np.float32)
    # The top fades too: aligned crops cut the forehead.
    matte = matte * np.clip(0.3 + 7 * np.linspace(0, 1, h, dtype=np.float32), 0, 1)[:, None]
    return Image.fromarray(matte.astype(np.uint8))


def plan_shoot(face: Image.Image, pts: np.ndarray, age: int, rng: np.random.Generator,
               region: str = "oval") -> Shoot:
    """Draw everything that stays fixed across one person's photos (``age`` greys the drawn
    hair; ``region``: how much of the face crop is kept, see :func:`_layer`)."""
    layer, lpts = _layer(face, pts, age, rng, region)
    d = float(np.hypot(*(lpts[1] - lpts[0])))
    # Eye distance in the photo: 70-100 px, so faces are ~180-260 px tall like the real photos.
    scale = rng.uniform(70, 100) / d
    side = float(rng.uniform(-1, 1))
    # The light is set once per shoot (colour, brightness, side): lighting the background and
    # the person before placing them costs one pass per shoot instead of one per photo.
    colour = rng.uniform(0.9, 1.1, size=3).astype(np.float32) * rng.uniform(0.75, 1.15)
    background = _lit(_background(rng), side, colour)
    rgb = _lit(np.asarray(layer)[..., :3], side, colour)
    layer = Image.fromarray(np.concatenate([rgb, np.asarray(layer)[..., 3:]], axis=2))
    owned = [_lit_mask(random_mask(rng), colour) for _ in range(int(rng.integers(1, 4)))]
    return Shoot(
        background=background, layer=layer, points=lpts, anchor=(lpts[0] + lpts[1]) / 2,
        scale=scale, centre=np.array([WIDTH * rng.uniform(0.42, 0.58), HEIGHT * rng.uniform(0.30, 0.42)]),
        tilt=float(rng.uniform(-5, 5)), side=side,
        masks=[owned[int(rng.integers(len(owned)))] for _ in _WEAR_STEMS],
        wrong=owned[int(rng.integers(len(owned)))], wrong_way=str(rng.choice(_WRONG)),
        quality=int(rng.integers(80, 96)),
    )


def _lit(rgb: np.ndarray, side: float, colour: np.ndarray) -> np.ndarray:
    """``rgb`` times the shoot's light: a colour cast and a left-right fall-off."""
    x = np.linspace(-1, 1, rgb.shape[1], dtype=np.float32)[None, :, None]
    return np.clip(rgb * ((1 + 0.15 * side * x) * colour), 0, 255).astype(np.uint8)


def _lit_mask(mask: MaskStyle, colour: np.ndarray) -> MaskStyle:
    """The mask's colours under the shoot's light (masks are drawn after the light is set)."""
    def lit(c):
        return tuple(int(min(255, v * g)) for v, g in zip(c, colour, strict=True))
    return replace(mask, colour=lit(mask.colour), second=lit(mask.second))


def _place(s: Shoot, rng: np.random.Generator) -> tuple[Image.Image, np.ndarray]:
    """The layer moved a little (shift, turn, distance) onto the background; landmarks there."""
    theta = np.deg2rad(s.tilt + rng.uniform(-3, 3))
    k = s.scale * rng.uniform(0.95, 1.05)
    rot = k * np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    centre = s.centre + rng.uniform(-10, 10, size=2)
    inv = np.linalg.inv(rot)
    offset = s.anchor - inv @ centre
    data = (inv[0, 0], inv[0, 1], offset[0], inv[1, 0], inv[1, 1], offset[1])
    person = s.layer.transform((WIDTH, HEIGHT), Image.Transform.AFFINE, data, Image.Resampling.BILINEAR)
    canvas = Image.fromarray(s.background)
    canvas.paste(person, mask=person.getchannel("A"))
    return canvas, (s.points - s.anchor) @ rot.T + centre


def render(s: Shoot, stem: str, rng: np.random.Generator) -> Image.Image:
    """Photo ``stem`` of shoot ``s``: placed, masked as the stem says, lit."""
    canvas, pts = _place(s, rng)
    kind = MASK_BY_STEM[stem]
    if kind == 0:
        canvas = draw_mask(canvas, pts, s.masks[_WEAR_STEMS.index(stem)], "wear", rng, s.side)
    elif kind == 1:
        canvas = draw_mask(canvas, pts, s.wrong, s.wrong_way, rng, s.side)
    gain = rng.uniform(0.96, 1.04)  # exposure differs a little from photo to photo
    return canvas.point([min(255, round(i * gain)) for i in range(256)] * 3)
