"""Reading photos: every image becomes 8-bit RGB the same way, for validation and for crops.

Kept out of :mod:`maskpipe.io` (plumbing, which reruns nothing when edited): how a photo is read
decides the crops, so editing this module reruns the crop step (see :mod:`maskpipe.dag.sources`).
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageOps

from maskpipe.io import MaskpipeError


def read_rgb(path: str | os.PathLike, draft: int | None = None) -> Image.Image:
    """Open an image as RGB, honouring EXIF orientation (RGBA, grayscale and CMYK converted).

    ``draft``: for a thumbnail, a JPEG is decoded at the smallest DCT scale (1/2 .. 1/8) whose
    sides are still at least this many pixels: several times faster than a full decode.

    Raises:
        MaskpipeError: the file is missing, empty or not a decodable image.
    """
    try:
        with Image.open(path) as im:
            if draft:
                im.draft("RGB", (draft, draft))  # a no-op for other formats
            im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                # 16-bit grayscale PNGs (mode "I" in older Pillow): convert("RGB") would clip every
                # value above 255 to white. (16-bit RGB PNGs already open as 8-bit "RGB".)
                scaled = np.asarray(im, dtype=np.float64) / 257.0
                im = Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))
            if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
                # Flatten transparency onto white rather than letting convert() drop it to black.
                im = im.convert("RGBA")
                background = Image.new("RGB", im.size, (255, 255, 255))
                background.paste(im, mask=im.getchannel("A"))
                return background
            return im.convert("RGB")
    except FileNotFoundError as e:
        raise MaskpipeError(f"{path}: image not found") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise MaskpipeError(f"{path}: unreadable image ({e})") from e


#: Thumbnail (width, height) of a photo's look: coarse enough that a shift of a few pixels or a
#: different mask changes little, fine enough to tell two rooms apart.
LOOK = (12, 16)


def look(image: Image.Image) -> np.ndarray:
    """A photo's look (an RGB image, as :func:`read_rgb` gives): its ``LOOK`` colour thumbnail
    as floats in 0..1, flattened. The crop step groups eval photos into shoots by it, the persons
    step into persons (with their faces)."""
    thumb = image.resize(LOOK, Image.Resampling.BOX)
    return np.asarray(thumb, dtype=np.float32).reshape(-1) / 255.0
