"""The declared search space (config ``search.space``): checked, sampled by Optuna, applied.

Each entry maps onto one place in a model's config:

==================  ===========================================================================
``lr``              ``optimizer.lr``
``weight_decay``    ``optimizer.weight_decay``
``optimizer``       ``optimizer.name`` (a name of :data:`maskpipe.train.optim.OPTIMIZERS`)
``scheduler``       ``scheduler.name`` (of :data:`~maskpipe.train.optim.SCHEDULERS`; the other
                    scheduler keys keep the model's values)
``loss``            the whole ``loss`` list, chosen by the name it has in the space
``augment_strength`` s: every top-level ``augment`` transform's ``p`` becomes ``min(1, s * p)``
                    (a transform without ``p``: its albumentations default), rounded to 6 places
``image_size``      ``image_size``
``epochs``          ``epochs``
==================  ===========================================================================

A number entry is a range ``{low, high, log}`` or a list of values; Optuna sees lists (and sizes,
as ``"HxW"`` strings, and loss names) as categorical parameters.
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass
from typing import Any

from maskpipe.io import MaskpipeError

#: The space's entries, in the order trials draw them.
KEYS = ("lr", "weight_decay", "optimizer", "scheduler", "loss", "augment_strength", "image_size",
        "epochs")
_INTEGER = {"epochs"}


@dataclass(frozen=True)
class Dimension:
    """One searched parameter: a range (``low``..``high``) or ``choices``."""

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple = ()

    def suggest(self, trial) -> Any:
        """Draw this parameter for an Optuna trial."""
        if self.choices:
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.name in _INTEGER:
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, log=self.log)


def size_name(size: int | list[int]) -> str:
    """``[64, 48]`` (or ``64``) as the categorical value ``"64x48"``."""
    h, w = (size, size) if isinstance(size, int) else size
    return f"{h}x{w}"


def _registry_names(key: str) -> list[str]:
    from maskpipe.train.optim import OPTIMIZERS, SCHEDULERS

    return list(OPTIMIZERS if key == "optimizer" else SCHEDULERS)


def _dimension(key: str, value: Any) -> Dimension:
    where = f"search.space.{key}"
    if key in ("optimizer", "scheduler"):
        known = _registry_names(key)
        unknown = [v for v in value if v not in known]
        if unknown:
            raise MaskpipeError(f"{where}: unknown {key} {unknown[0]!r} (choose {', '.join(known)})")
        return Dimension(key, choices=tuple(dict.fromkeys(value)))
    if key == "loss":
        return Dimension(key, choices=tuple(value))
    if key == "image_size":
        return Dimension(key, choices=tuple(dict.fromkeys(size_name(s) for s in value)))
    if isinstance(value, list):
        if key in _INTEGER and not all(float(v).is_integer() for v in value):
            raise MaskpipeError(f"{where}: expected whole numbers, got {value}")
        return Dimension(key, choices=tuple(int(v) if key in _INTEGER else v for v in dict.fromkeys(value)))
    low, high, log = value["low"], value["high"], value.get("log", False)
    if not low < high:
        raise MaskpipeError(f"{where}: low ({low}) must be below high ({high}); a single value is a list")
    if log and low <= 0:
        raise MaskpipeError(f"{where}: log: true needs low > 0, got {low}")
    if key in _INTEGER and not (float(low).is_integer() and float(high).is_integer()):
        raise MaskpipeError(f"{where}: expected whole numbers, got {low}..{high}")
    return Dimension(key, low=low, high=high, log=log)


def parse_space(space: dict) -> list[Dimension]:
    """The dimensions of a ``search.space`` section, in :data:`KEYS` order.

    Raises:
        MaskpipeError: the space is empty, or an entry is invalid, naming ``search.space.KEY``.
    """
    dims = [_dimension(k, space[k]) for k in KEYS if k in space]
    if not dims:
        raise MaskpipeError(f"search.space: nothing to search; declare one of {', '.join(KEYS)}")
    return dims


def _default_p(name: str) -> float | None:
    import albumentations as A

    cls = getattr(A, name, None)
    param = inspect.signature(cls).parameters.get("p") if isinstance(cls, type) else None
    return None if param is None or param.default is inspect.Parameter.empty else float(param.default)


def scale_augment(augment: list[dict], strength: float) -> list[dict]:
    """``augment`` with every transform's probability scaled: ``p -> min(1, strength * p)``."""
    out = []
    for t in augment:
        p = t.get("p", _default_p(t["name"]))
        out.append(dict(t) if p is None else {**t, "p": round(min(1.0, strength * p), 6)})
    return out


def apply(base: dict, params: dict, space: dict) -> dict:
    """The model config ``base`` with a trial's ``params`` put in place (see the module's table)."""
    cfg = copy.deepcopy(base)
    for key, value in params.items():
        if key in ("lr", "weight_decay"):
            cfg["optimizer"] = {**cfg["optimizer"], key: float(value)}
        elif key in ("optimizer", "scheduler"):
            cfg[key] = {**cfg[key], "name": value}
        elif key == "loss":
            cfg["loss"] = copy.deepcopy(space["loss"][value])
        elif key == "augment_strength":
            cfg["augment"] = scale_augment(cfg["augment"], float(value))
        elif key == "image_size":
            cfg["image_size"] = [int(v) for v in value.split("x")]
        elif key == "epochs":
            cfg["epochs"] = int(value)
        else:
            raise MaskpipeError(f"search: unknown parameter {key!r} (known: {', '.join(KEYS)})")
    return cfg


def extremes(dims: list[Dimension]) -> list[dict]:
    """One params dict per choice and range end: applied to the model, each must validate."""
    out = []
    for d in dims:
        values = d.choices or ((int(d.low), int(d.high)) if d.name in _INTEGER else (d.low, d.high))
        out += [{d.name: v} for v in values]
    return out
