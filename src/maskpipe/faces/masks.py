"""Face masks drawn onto a photo from the face's five landmarks (eyes, nose, mouth corners).

Geometry lives in a face frame: origin between the eyes, ``u`` along the eye line and ``v`` down
the face, both in eye distances. A mask is a polygon in that frame (its outline follows cheeks
and jaw estimated from the landmarks, and leans with the head's turn), filled with a colour or a
pattern, shaded like cloth bent over a face, and given pleats, folds or seams and ear loops.
How it is worn decides where it sits: over the nose (``wear``), or below the nose, on the chin or
over the mouth only (the wrong ways people wear a mask, ``incorrect_mask``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

STYLES = ("surgical", "cloth", "kf94")
WEARS = ("wear", "below_nose", "chin", "mouth")
PATTERNS = ("plain", "stripes", "dots", "checks")
# Colours people's masks come in (RGB), by style; surgical masks are mostly light blue.
_COLOURS = {
    "surgical": [(160, 196, 222), (168, 204, 228), (150, 186, 214), (236, 238, 236), (40, 42, 46),
                 (232, 184, 196), (150, 206, 196)],
    "cloth": [(32, 32, 36), (44, 52, 78), (118, 120, 124), (226, 224, 218), (196, 176, 146),
              (120, 36, 44), (70, 96, 70), (150, 170, 200)],
    "kf94": [(240, 240, 238), (36, 36, 40), (150, 152, 156), (214, 204, 188)],
}
_OUTLINE = 12  # polygon points per edge
# Geometry and shading, set so MTCNN at the crop step's settings finds about as many worn masks
# as in real photos (bench/detect_rates.py: ~91%; flat masks gave 55-73%, lower and narrower
# ones 95-98%).
HALF_WIDTH = 1.08  # half a mask's width, eye distances
WEAR_TOP = (0.32, 0.42)  # how far above the nose tip a worn mask's top edge sits, eye distances
SHADING = 1.0  # strength of the nose ridge, its side shadows and the curve under the chin


@dataclass(frozen=True)
class MaskStyle:
    """One physical mask: what it looks like, whatever way it is worn."""

    style: str
    colour: tuple[int, int, int]
    pattern: str = "plain"
    second: tuple[int, int, int] = (255, 255, 255)  # the pattern's other colour
    period: float = 0.25  # pattern period, eye distances
    angle: float = 0.0  # pattern direction, radians


def random_mask(rng: np.random.Generator) -> MaskStyle:
    """A mask as people own them: surgical 45%, cloth 35%, KF94 20%; a quarter of cloth patterned."""
    style = str(rng.choice(STYLES, p=[0.45, 0.35, 0.20]))
    colours = _COLOURS[style]
    colour = colours[int(rng.integers(len(colours)))]
    pattern = "plain"
    if style == "cloth" and rng.random() < 0.25:
        pattern = str(rng.choice(PATTERNS[1:]))
    second = tuple(int(c) for c in rng.integers(0, 256, size=3))
    return MaskStyle(style, colour, pattern, second, float(rng.uniform(0.15, 0.35)),
                     float(rng.uniform(0, np.pi)))


@dataclass(frozen=True)
class Frame:
    """The face frame of one photo, from its five landmarks (x, y pixels)."""

    mid: np.ndarray
    d: float
    ex: np.ndarray
    ey: np.ndarray
    nose: tuple[float, float]  # (u, v) of the nose tip
    mouth: float  # v of the mouth corners

    @classmethod
    def from_points(cls, pts: np.ndarray) -> Frame:
        le, re = sorted(np.asarray(pts[:2], dtype=np.float64).tolist())  # a flip swaps the eyes
        le, re = np.asarray(le), np.asarray(re)
        mid, d = (le + re) / 2, float(np.hypot(*(re - le)))
        ex = (re - le) / d
        ey = np.array([-ex[1], ex[0]])
        uv = (np.asarray(pts[2:], dtype=np.float64) - mid) @ np.stack([ex, ey]).T / d
        return cls(mid, d, ex, ey, (float(uv[0, 0]), float(uv[0, 1])), float(uv[1:, 1].mean()))

    def to_px(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Face-frame points -> (n, 2) pixels."""
        u, v = np.broadcast_arrays(np.asarray(u, float), np.asarray(v, float))
        return self.mid + self.d * (u.reshape(-1, 1) * self.ex + v.reshape(-1, 1) * self.ey)

    def to_uv(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel grids -> face-frame grids."""
        dx, dy = x - self.mid[0], y - self.mid[1]
        return (dx * self.ex[0] + dy * self.ex[1]) / self.d, (dx * self.ey[0] + dy * self.ey[1]) / self.d


def _outline(f: Frame, style: str, wear: str, rng: np.random.Generator) -> tuple[np.ndarray, float, float]:
    """The mask's polygon in the face frame, and the v of its top and bottom at the centre."""
    un, vn = f.nose
    # The head's turn moves the nose off the eyes' middle: the far cheek narrows, the near widens.
    left, right = -HALF_WIDTH - 0.9 * un, HALF_WIDTH - 0.9 * un
    chin = f.mouth + rng.uniform(0.62, 0.78)
    top = {"wear": vn - rng.uniform(*WEAR_TOP), "below_nose": vn + rng.uniform(0.08, 0.16),
           "chin": f.mouth + rng.uniform(0.2, 0.3), "mouth": vn + rng.uniform(0.1, 0.16)}[wear]
    bottom = {"wear": chin + 0.1, "below_nose": chin + 0.1, "chin": chin + 0.3,
              "mouth": f.mouth + rng.uniform(0.25, 0.35)}[wear]
    if wear == "chin":
        left, right = left * 0.9, right * 0.9
    t = np.linspace(0.0, 1.0, _OUTLINE)
    u = left + (right - left) * t
    c = 2 * t - 1  # -1 .. 1 across the mask
    if style == "surgical":  # straight top with a nose bump, flat sides, bottom under the chin
        top_v = top + 0.12 * c**2 - 0.06 * np.exp(-(((u - un) / 0.3) ** 2))
        bot_v = bottom - 0.28 * c**4
    elif style == "kf94":  # boat-shaped: a peak over the nose, a point under the chin
        top_v = top + 0.32 * np.abs(u - un) / max(right - left, 1e-6) * 2
        bot_v = bottom + 0.08 - 0.55 * np.abs(c) ** 1.5
    else:  # cloth: rounded all round
        top_v = top - 0.04 + 0.22 * c**2
        bot_v = bottom - 0.5 * c**2
    side = np.linspace(0.0, 1.0, 4)[1:-1]
    right_side = np.stack([np.full(2, right), top_v[-1] + side * (bot_v[-1] - top_v[-1])], 1)
    left_side = np.stack([np.full(2, left), bot_v[0] + side * (top_v[0] - bot_v[0])], 1)
    poly = np.concatenate([np.stack([u, top_v], 1), right_side * [0.97, 1],
                           np.stack([u[::-1], bot_v[::-1]], 1), left_side * [0.97, 1]])
    return poly, top, bottom


def _fill(mask: MaskStyle, u: np.ndarray, v: np.ndarray, top: float, bottom: float,
          light: float, f: Frame) -> np.ndarray:
    """RGB float field of the mask's cloth at face-frame grids ``u``, ``v``: pattern and shading."""
    base = np.asarray(mask.colour, np.float32)
    rgb = np.broadcast_to(base, (*u.shape, 3)).copy()
    if mask.pattern != "plain":
        a, p = mask.angle, mask.period
        s = u * np.cos(a) + v * np.sin(a)
        t = -u * np.sin(a) + v * np.cos(a)
        if mask.pattern == "stripes":
            on = np.sin(2 * np.pi * s / p) > 0.3
        elif mask.pattern == "checks":
            on = (np.floor(s / p) + np.floor(t / p)) % 2 == 0
        else:
            on = (np.mod(s, p) - p / 2) ** 2 + (np.mod(t, p) - p / 2) ** 2 < (0.28 * p) ** 2
        rgb[on] = mask.second
    # Bent over the face, lit from one side: a cylinder round the cheeks, a ridge over the nose
    # with a shadow beside it, and the curve under the chin. (Flat masks hide the face's shape
    # from a detector far more than real ones do: see bench/detect_rates.py.)
    un, vn = f.nose
    x = u - un
    ridge = np.exp(-((x / 0.22) ** 2)) * np.exp(-(((v - vn + 0.1) / 0.35) ** 2))
    beside = np.exp(-(((np.abs(x) - 0.32) / 0.14) ** 2)) * np.exp(-(((v - vn) / 0.3) ** 2))
    under = np.clip((v - f.mouth - 0.35) / 0.45, 0, 1) ** 2
    shade = (1.0 - 0.3 * (x / 1.1) ** 2 + 0.12 * light * x
             + SHADING * (0.12 * ridge - 0.14 * beside - 0.22 * under))
    return rgb * shade[..., None]


def _creases(draw: ImageDraw.ImageDraw, f: Frame, mask: MaskStyle, poly: np.ndarray, top: float,
             bottom: float, offset: np.ndarray) -> None:
    """Pleats (surgical), a centre fold (KF94) or a seam (cloth), drawn as shadows."""
    dark = tuple(int(c * 0.72) for c in mask.colour)
    light = tuple(min(255, int(c * 1.1) + 12) for c in mask.colour)
    width = max(1, round(0.035 * f.d))
    u_lo, u_hi = poly[:, 0].min(), poly[:, 0].max()
    us = np.linspace(u_lo + 0.08, u_hi - 0.08, 10)
    if mask.style == "surgical":
        for frac in (0.3, 0.5, 0.7):
            v = top + frac * (bottom - top) + 0.04 * ((us - us.mean()) / (u_hi - u_lo)) ** 2
            pts = f.to_px(us, v) - offset
            draw.line([tuple(p) for p in pts], fill=dark, width=width)
            draw.line([tuple(p) for p in pts - f.ey * width], fill=light, width=max(1, width // 2))
        wire = f.to_px(np.linspace(f.nose[0] - 0.3, f.nose[0] + 0.3, 5), top + 0.08) - offset
        draw.line([tuple(p) for p in wire], fill=light, width=width)
    elif mask.style == "kf94":
        v = np.full_like(us, top + 0.45 * (bottom - top))
        draw.line([tuple(p) for p in f.to_px(us, v) - offset], fill=dark, width=width)
    else:
        vs = np.linspace(top + 0.02, bottom - 0.02, 6)
        draw.line([tuple(p) for p in f.to_px(np.full_like(vs, f.nose[0]), vs) - offset], fill=dark, width=width)


def draw_mask(img: Image.Image, pts: np.ndarray, mask: MaskStyle, wear: str, rng: np.random.Generator,
              light: float = 0.0) -> Image.Image:
    """``img`` with ``mask`` worn the ``wear`` way on the face whose landmarks are ``pts``.

    Args:
        img: RGB photo (not modified).
        pts: (5, 2) landmarks in ``img``'s pixels: left eye, right eye, nose, mouth corners.
        mask: The mask.
        wear: One of :data:`WEARS`.
        rng: Small per-photo variations of the mask's placement.
        light: -1..1, the side the light comes from (shading).
    """
    f = Frame.from_points(pts)
    poly, top, bottom = _outline(f, mask.style, wear, rng)
    px = f.to_px(poly[:, 0], poly[:, 1])
    ears = f.to_px(np.array([-1.38, 1.38]) - 0.9 * f.nose[0], np.array([0.35, 0.35]))
    lo = np.floor(np.minimum(px.min(0), ears.min(0)) - 3).astype(int)
    hi = np.ceil(np.maximum(px.max(0), ears.max(0)) + 3).astype(int)
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, [img.width, img.height])
    if np.any(hi - lo < 2):
        return img.copy()
    w, h = (hi - lo).tolist()
    # Coverage drawn at 2x and reduced: smooth edges at a fraction of a blur's cost.
    cover = Image.new("L", (2 * w, 2 * h), 0)
    ImageDraw.Draw(cover).polygon([tuple(p) for p in 2 * (px - lo)], fill=255)
    cover = cover.reduce(2)
    ys, xs = np.mgrid[lo[1]:hi[1], lo[0]:hi[0]].astype(np.float32) + 0.5
    u, v = f.to_uv(xs, ys)
    rgb = _fill(mask, u, v, top, bottom, light, f)
    if mask.style == "cloth":  # woven texture
        rgb *= 1 + rng.normal(0, 0.035, size=rgb.shape[:2])[..., None].astype(np.float32)
    layer = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(layer)
    _creases(draw, f, mask, poly, top, bottom, lo.astype(float))
    out = img.copy()
    region = out.crop((*lo, *hi))
    # Ear loops: from the mask's top and bottom corners to behind the ears.
    loop = tuple(int(c * 0.9) for c in mask.colour) if mask.style == "cloth" else (236, 236, 232)
    loops = ImageDraw.Draw(region)
    n = _OUTLINE
    for corner_top, corner_bottom, ear in ((px[0], px[n + 2 + n - 1], ears[0]), (px[n - 1], px[n + 2], ears[1])):
        width = max(1, round(0.03 * f.d))
        loops.line([tuple(corner_top - lo), tuple(ear - lo)], fill=loop, width=width)
        loops.line([tuple(corner_bottom - lo), tuple(ear - lo + 0.15 * f.d * f.ey)], fill=loop, width=width)
    region.paste(layer, (0, 0), cover.filter(ImageFilter.GaussianBlur(0.6)))
    out.paste(region, tuple(lo.tolist()))
    return out
