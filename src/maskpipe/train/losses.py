"""Training losses by name: a weighted sum of cross-entropy, softmax focal and soft macro-F1.

Every loss takes ``(N, C)`` logits and either ``(N,)`` class indices or ``(N, C)`` soft targets
(CutMix / MixUp); indices are turned into one-hot rows first, so both give the same value.
ce and focal average like torch's weighted cross-entropy with class indices: the summed loss
divided by the summed target weight ``sum_n sum_c w_c t_nc`` (plain N without class weights).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from maskpipe.io import MaskpipeError


def balanced_weights(class_counts: np.ndarray) -> np.ndarray:
    """scikit-learn's "balanced" weights ``n_total / (num_classes * count)`` over all classes.

    A class with count 0 gets weight 0: it has no training sample to weigh, and a huge weight
    would only blow up the validation loss of a fold that happens to hold one.
    """
    counts = np.asarray(class_counts, dtype=np.float64)
    safe = np.where(counts > 0, counts, 1.0)
    return np.where(counts > 0, counts.sum() / (len(counts) * safe), 0.0)


class _ClassLoss(nn.Module):
    """Shared state of ce and focal: class weights (a buffer, so ``.to`` moves them)."""

    def __init__(self, weight: torch.Tensor | None, label_smoothing: float) -> None:
        super().__init__()
        self.register_buffer("weight", weight, persistent=False)
        self.label_smoothing = label_smoothing

    def _mean(self, total: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # torch divides index targets by the summed weight of their classes but soft targets
        # by N; dividing by sum_c w_c t_nc makes one-hot rows match the index behaviour.
        if self.weight is None:
            return total / target.shape[0]
        return total / (target * self.weight).sum().clamp_min(torch.finfo(total.dtype).tiny)


class _CrossEntropy(_ClassLoss):
    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = F.cross_entropy(logits, target, weight=self.weight,
                                label_smoothing=self.label_smoothing, reduction="sum")
        return self._mean(total, target)


class _Focal(_ClassLoss):
    # Written by hand: torchvision's sigmoid_focal_loss is binary only. Smoothing is applied to
    # the targets as torch's cross_entropy does, so gamma=0 gives exactly the ce loss.
    def __init__(self, weight: torch.Tensor | None, label_smoothing: float, gamma: float) -> None:
        super().__init__(weight, label_smoothing)
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        smoothed = target * (1 - self.label_smoothing) + self.label_smoothing / logits.shape[1]
        logp = F.log_softmax(logits, dim=1)
        # clamp: d/dp (1-p)^gamma is infinite at p=1 for gamma<1 and would give NaN gradients
        modulator = (1 - logp.exp()).clamp_min(torch.finfo(logp.dtype).eps) ** self.gamma
        loss = -smoothed * modulator * logp
        if self.weight is not None:
            loss = loss * self.weight
        return self._mean(loss.sum(), target)


class _SoftF1(nn.Module):
    """``1 - mean F1_c`` over the classes present in the batch's targets.

    A class absent from the targets has TP = 0, so its F1 is 0 whatever the predictions and it
    has no gradient: counting it would only add a constant and keep the loss above 0 on batches
    missing classes. False positives on it are still penalised through the true classes' FN.
    """

    eps = 1e-7

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        p = logits.softmax(dim=1)
        tp, pred, true = (p * target).sum(0), p.sum(0), target.sum(0)
        f1 = 2 * tp / (pred + true + self.eps)  # 2TP + FP + FN = sum p + sum t
        present = true > 0
        # a product, not f1[present]: boolean indexing waits for the GPU every batch
        return 1 - (f1 * present).sum() / present.sum().clamp_min(1)


#: Loss builders by config name: ``(weight, label_smoothing, gamma) -> module``; ``weight`` is a
#: per-class tensor or None. Every loss takes (N, C) logits and (N, C) float targets.
LOSSES: dict[str, Callable[..., nn.Module]] = {
    "ce": lambda weight, label_smoothing, gamma: _CrossEntropy(weight, label_smoothing),
    "focal": lambda weight, label_smoothing, gamma: _Focal(weight, label_smoothing, gamma),
    "f1": lambda weight, label_smoothing, gamma: _SoftF1(),
}


def create_loss(name: str, weight: torch.Tensor | None = None, label_smoothing: float = 0.0,
                gamma: float = 2.0, where: str = "loss") -> nn.Module:
    """The loss ``name`` (a key of :data:`LOSSES`) on (N, C) logits and (N, C) float targets.

    Raises:
        MaskpipeError: an unknown name, or f1 given smoothing or class weights, naming ``where``.
    """
    if name not in LOSSES:
        raise MaskpipeError(f"{where}.name: unknown loss {name!r} (choose {', '.join(LOSSES)})")
    # f1: smoothing would mark every class present and make a perfect F1 unreachable
    if name == "f1" and (label_smoothing or weight is not None):
        raise MaskpipeError(f"{where}: f1 takes no label_smoothing or class_weights")
    return LOSSES[name](weight, float(label_smoothing), float(gamma))


class WeightedLoss(nn.Module):
    """``sum_i weight_i * loss_i``, computed in float32 for any logits dtype."""

    def __init__(self, losses: list[nn.Module], weights: list[float], names: list[str]) -> None:
        super().__init__()
        self.losses = nn.ModuleList(losses)
        self.weights, self.names = weights, names

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()  # bf16/fp16 logits under autocast; only float32-safe ops follow
        if target.is_floating_point():
            if target.shape != logits.shape:
                raise ValueError(f"soft targets {tuple(target.shape)} != logits {tuple(logits.shape)}")
            target = target.float()
        else:
            target = F.one_hot(target.long(), logits.shape[1]).float()
        return sum(w * loss(logits, target) for w, loss in zip(self.weights, self.losses, strict=True))

    def extra_repr(self) -> str:
        return " + ".join(f"{w:g}*{n}" for w, n in zip(self.weights, self.names, strict=True))


def build_loss(specs: list[dict], num_classes: int, class_counts: np.ndarray | None = None,
               where: str = "loss") -> nn.Module:
    """The weighted sum of the losses in ``specs`` (the validated ``models.<name>.loss`` list).

    Args:
        specs: items with ``name`` (ce | focal | f1), ``weight``, ``label_smoothing`` (ce, focal),
            ``class_weights`` (none | balanced; ce, focal) and ``gamma`` (focal).
        num_classes: number of logits per sample.
        class_counts: images of each class in the training fold; needed by "balanced".
        where: config path of ``specs``, used in error messages.

    Returns:
        A module ``(logits, target) -> scalar``; move it with ``.to(device)``.

    Raises:
        MaskpipeError: naming ``where[i]``: unknown name or class_weights, "balanced" without
            (or with wrongly sized) class counts, or f1 given smoothing or class weights.
    """
    losses = []
    for i, spec in enumerate(specs):
        at, cw = f"{where}[{i}]", spec["class_weights"]
        if cw not in ("none", "balanced"):
            raise MaskpipeError(f"{at}.class_weights: {cw!r} is neither 'none' nor 'balanced'")
        losses.append(create_loss(spec["name"], _class_weights(cw, class_counts, num_classes, at),
                                  spec["label_smoothing"], spec["gamma"], at))
    if not losses:
        raise MaskpipeError(f"{where}: no losses given")
    return WeightedLoss(losses, [float(s["weight"]) for s in specs], [s["name"] for s in specs])


def _class_weights(kind: str, class_counts: np.ndarray | None, num_classes: int,
                   at: str) -> torch.Tensor | None:
    if kind == "none":
        return None
    if class_counts is None:
        raise MaskpipeError(f"{at}.class_weights: 'balanced' needs the training fold's "
                            "class counts, none were given")
    if len(class_counts) != num_classes:
        raise MaskpipeError(f"{at}.class_weights: {len(class_counts)} class counts "
                            f"for {num_classes} classes")
    return torch.tensor(balanced_weights(class_counts), dtype=torch.float32)
