"""Image transforms built by name from the config, CutMix/MixUp, and class-balanced sampling."""

from __future__ import annotations

import difflib
import functools
import inspect

import albumentations as A
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2
from pydantic import ValidationError
from timm.data import Mixup
from torch.utils.data import WeightedRandomSampler

from maskpipe.io import MaskpipeError

#: Removed in albumentations 2 with no close spelling left for difflib to find.
_RENAMED = {"Cutout": "CoarseDropout", "Flip": "HorizontalFlip"}
#: Always appended by build_transforms; a second copy would normalise twice.
_RESERVED = {"Normalize", "ToTensorV2"}
#: Compositions a config may nest, each with a ``transforms:`` list of its own.
_COMPOSITIONS = {"OneOf": A.OneOf, "SomeOf": A.SomeOf}


class _Compose(A.Compose):
    """``A.Compose`` that gives each child its own seed.

    albumentations 2.0.8 hands every child the Compose's seed unchanged, so transforms with the
    same ``p`` fire together: HorizontalFlip and VerticalFlip at p=0.5 flip both or neither.
    """

    def set_random_seed(self, seed: int | None) -> None:
        super().set_random_seed(seed)
        if seed is not None:
            _spread_seed(self.transforms, seed)


def _spread_seed(transforms, seed: int) -> None:
    for t, child in zip(transforms, np.random.SeedSequence(seed).spawn(len(transforms))):
        child_seed = int(child.generate_state(1)[0])
        t.set_random_seed(child_seed)
        if isinstance(t, A.BaseCompose):
            _spread_seed(t.transforms, child_seed)


@functools.cache
def _transform_classes() -> dict[str, type]:
    """Public image transforms of albumentations (not its base classes, tensors or 3D helpers)."""
    return {n: c for n, c in vars(A).items()
            if isinstance(c, type) and issubclass(c, A.BasicTransform)
            and c.__module__.startswith("albumentations.augmentations") and n not in _RESERVED}


def _tuples(value):
    """YAML lists as the tuples albumentations documents (its validated classes accept both)."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _build(items: list[dict], at: str) -> list:
    """Transforms from ``[{"name": ..., **kwargs}, ...]``; ``at`` names the list in errors."""
    if not isinstance(items, list):
        raise MaskpipeError(f"{at}: expected a list of transforms, got {items!r}")
    return [_build_one(item, f"{at}[{i}]") for i, item in enumerate(items)]


def _build_one(item: dict, at: str):
    """One transform; checks the name, then the argument names, then albumentations' values."""
    if not isinstance(item, dict) or not isinstance(item.get("name"), str):
        raise MaskpipeError(f"{at}: expected a mapping with a 'name' key, got {item!r}")
    kwargs = {k: _tuples(v) for k, v in item.items() if k != "name"}
    name, classes = item["name"], _transform_classes()
    cls = classes.get(name) or _COMPOSITIONS.get(name)
    if cls is None:
        if name in _RESERVED:
            raise MaskpipeError(f"{at}: {name} is added by the pipeline itself; remove it")
        hint = _RENAMED.get(name) or next(
            iter(difflib.get_close_matches(name, [*classes, *_COMPOSITIONS], n=1)), None)
        raise MaskpipeError(f"{at}: unknown albumentations transform {name!r}"
                            + (f" (did you mean {hint!r}?)" if hint else ""))
    path, at = at, f"{at} ({name})"
    valid = [p for p in inspect.signature(cls).parameters if p not in ("self", "strict")]
    for key in kwargs:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"valid: {', '.join(valid)}"
            raise MaskpipeError(f"{at}: unknown argument {key!r} ({hint})")
    if cls in _COMPOSITIONS.values():
        kwargs["transforms"] = _build(item.get("transforms", []), f"{path}.transforms")
    # Only classes whose own __init__ albumentations wraps in pydantic validation accept
    # strict=True, which turns its "warn and fall back to defaults" into an error.
    owner = next(k for k in cls.__mro__ if "__init__" in vars(k))
    if "InitSchema" in vars(owner):
        kwargs["strict"] = True
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:
        cause = e.__cause__  # albumentations re-raises pydantic's error as a ValueError
        if isinstance(cause, ValidationError):
            detail = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'arguments'}: {err['msg']}"
                               for err in cause.errors())
        else:
            detail = (str(e).splitlines() or [type(e).__name__])[0]
        raise MaskpipeError(f"{at}: {detail}") from e


def build_transforms(size: tuple[int, int], mean, std, preprocess: list[dict],
                     augment: list[dict] | None, seed: int | None = None,
                     where: str = "models") -> A.Compose:
    """``preprocess`` → ``augment`` (training only) → resize to ``size`` → normalise → tensor.

    albumentations draws from its own generators, never numpy's or torch's: without ``seed``
    two runs augment differently, and DataLoader workers reseed it (:func:`reseed_worker`).
    ``preprocess`` also runs in evaluation, so it should hold deterministic transforms only.

    Args:
        size: output (height, width).
        mean: per-channel normalisation mean (0–1 scale).
        std: per-channel normalisation std (0–1 scale).
        preprocess: ``[{"name": "CenterCrop", "height": 384, "width": 384}, ...]``.
        augment: training augmentations in the same form; ``None`` builds the evaluation pipeline.
            ``OneOf``/``SomeOf`` may nest their own ``transforms:`` list.
        seed: seed of the augmentation generators (each transform gets its own stream from it).
        where: config key of the model, used in error messages.

    Returns:
        A strict ``A.Compose`` taking ``image=`` uint8 HxWx3 and giving a float CxHxW tensor.

    Raises:
        MaskpipeError: an unknown transform or argument, or a value albumentations rejects,
            naming ``{where}.augment[i] (Name)`` (or ``preprocess[i]``).
    """
    h, w = size
    ops = _build(list(preprocess or []), f"{where}.preprocess")
    if augment is not None:
        ops += _build(augment, f"{where}.augment")
    ops += [A.Resize(height=h, width=w), A.Normalize(mean=mean, std=std), ToTensorV2()]
    return _Compose(ops, strict=True, seed=seed)


def reseed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: give each worker's albumentations its own stream.

    torch seeds each worker from the loader's generator (different per epoch, same per run),
    so the augmentations are reproducible and never repeat across workers or epochs. A
    ``ConcatDataset`` (a pseudo-label round's: the fold's rows, then the eval photos) has no
    transform of its own: each of its parts' transforms is reseeded (a shared one once).
    """
    info = torch.utils.data.get_worker_info()
    parts = getattr(info.dataset, "datasets", [info.dataset])
    transforms = {id(t): t for t in (getattr(d, "transform", None) for d in parts)
                  if hasattr(t, "set_random_seed")}
    for transform in transforms.values():
        transform.set_random_seed(torch.initial_seed() % 2**32)


def make_mixup(cfg: dict, num_classes: int, label_smoothing: float = 0.0) -> Mixup | None:
    """timm's batch-level CutMix/MixUp, or ``None`` when the config turns it off.

    The returned callable maps ``(images, int labels)`` to mixed images and soft targets. It
    needs an even batch (use ``drop_last=True``) and draws from numpy's global generator, so
    seed that (``np.random.seed``) for reproducible runs.

    Args:
        cfg: ``{"prob", "mixup_alpha", "cutmix_alpha", "switch_prob"}``.
        num_classes: width of the soft targets.
        label_smoothing: smoothing folded into the soft targets (timm's default is 0.1; ours 0).

    Returns:
        A ``timm.data.Mixup``, or ``None`` if ``prob`` is 0 or both alphas are 0.
    """
    if cfg["prob"] == 0 or (cfg["mixup_alpha"] == 0 and cfg["cutmix_alpha"] == 0):
        return None
    return Mixup(mixup_alpha=cfg["mixup_alpha"], cutmix_alpha=cfg["cutmix_alpha"],
                 prob=cfg["prob"], switch_prob=cfg["switch_prob"], mode="batch",
                 label_smoothing=label_smoothing, num_classes=num_classes)


def balanced_sampler(labels: np.ndarray, generator: torch.Generator) -> WeightedRandomSampler:
    """Draw every class equally often: weight each sample by 1 / (its class's count).

    Args:
        labels: the training labels, one per sample (any hashable values).
        generator: torch generator the draws come from (seed it for a reproducible order).

    Returns:
        A sampler of ``len(labels)`` indices, drawn with replacement.
    """
    _, inverse, counts = np.unique(np.asarray(labels), return_inverse=True, return_counts=True)
    weights = torch.as_tensor(1.0 / counts[inverse.ravel()], dtype=torch.double)
    return WeightedRandomSampler(weights, num_samples=len(weights), replacement=True,
                                 generator=generator)
