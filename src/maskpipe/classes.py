"""The competition's label encoding: 18 classes = mask * 6 + gender * 3 + age.

This module is the one place that knows the layout: labels go both ways with :func:`encode` and
:func:`decode`, probabilities with :func:`marginals` (18 -> tasks) and :func:`joint` (tasks -> 18).
Every index here is spelled out explicitly. Teams that derived class indices from the sort order
of folder or file names got silently wrong labels; nothing in maskpipe does that.
"""

from __future__ import annotations

import numpy as np

NUM_CLASSES = 18

#: Mask status by the file's stem in a person folder (mask1..mask5 are all "wear").
MASK_BY_STEM: dict[str, int] = {
    "mask1": 0,
    "mask2": 0,
    "mask3": 0,
    "mask4": 0,
    "mask5": 0,
    "incorrect_mask": 1,
    "normal": 2,
}
IMAGE_STEMS: tuple[str, ...] = tuple(MASK_BY_STEM)
MASK_NAMES = ("wear", "incorrect", "not wear")
GENDER_BY_NAME: dict[str, int] = {"male": 0, "female": 1}
GENDER_NAMES = ("male", "female")
AGE_NAMES = ("<30", "30-59", ">=60")
#: The three tasks and their class counts, in the order of :func:`decode`.
TASKS: dict[str, int] = {"mask": 3, "gender": 2, "age": 3}
#: Each task's class names, in index order.
TASK_CLASS_NAMES: dict[str, tuple[str, ...]] = {"mask": MASK_NAMES, "gender": GENDER_NAMES, "age": AGE_NAMES}
#: Mask states as config values name them (``for_mask:``), in class order.
MASK_STATES = ("wear", "incorrect", "not_wear")
#: Column names of 18-class and per-task probabilities in prediction tables.
PROB_COLUMNS = [f"p{i:02d}" for i in range(NUM_CLASSES)]
TASK_COLUMNS = {t: [f"{t}{i}" for i in range(k)] for t, k in TASKS.items()}

#: Official age bins: <30, 30-59, >=60. Scoring and the submission always use these.
OFFICIAL_AGE_BOUNDS = (30, 60)


def age_bin(age: int | np.ndarray, bounds: tuple[int, int] = OFFICIAL_AGE_BOUNDS) -> np.ndarray:
    """Age group 0/1/2 for an age: below ``bounds[0]``, below ``bounds[1]``, or older."""
    return np.digitize(np.asarray(age), bounds, right=False)


def encode(mask: np.ndarray | int, gender: np.ndarray | int, age_group: np.ndarray | int):
    """Class index 0..17 from mask (0..2), gender (0..1) and age group (0..2)."""
    return np.asarray(mask) * 6 + np.asarray(gender) * 3 + np.asarray(age_group)


def decode(label: np.ndarray | int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mask, gender, age group) from class indices."""
    label = np.asarray(label)
    return label // 6, (label // 3) % 2, label % 3


def class_names() -> list[str]:
    """Human-readable names of the 18 classes, in index order."""
    return [
        f"{MASK_NAMES[m]}/{GENDER_NAMES[g]}/{AGE_NAMES[a]}"
        for m in range(3)
        for g in range(2)
        for a in range(3)
    ]


def marginals(p18) -> dict:
    """Per-task marginals of 18-class probabilities, soft targets or counts (n x 18 -> dict).

    Works on numpy arrays and torch tensors alike (n x 18 -> n x 3, n x 2, n x 3).
    """
    cube = p18.reshape(-1, *TASKS.values())  # [n, mask, gender, age]
    return {"mask": cube.sum((2, 3)), "gender": cube.sum((1, 3)), "age": cube.sum((1, 2))}


def joint(task_probs: dict):
    """18-class probabilities from the three task probabilities (independence given the image).

    Works on numpy arrays and torch tensors alike (n x 3, n x 2, n x 3 -> n x 18).
    """
    m, g, a = task_probs["mask"], task_probs["gender"], task_probs["age"]
    return (m[:, :, None, None] * g[:, None, :, None] * a[:, None, None, :]).reshape(-1, NUM_CLASSES)
