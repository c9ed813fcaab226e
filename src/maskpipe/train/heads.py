"""Model heads: one 18-class head, three task heads on one backbone, or a single-task model.

Every head's output becomes per-task probabilities, and the 18-class probabilities where the head
sees all three tasks. A multitask head's 18-class probability is the product of its task
probabilities: P(mask, gender, age | image) = P(mask | image) P(gender | image) P(age | image),
i.e. the tasks are assumed independent given the image. For the photos of this competition that
is close to true (a mask hides neither gender nor age cues in the forehead and eyes), and it is
what the teams that trained task models did when they combined them.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from maskpipe.classes import MASK_STATES, NUM_CLASSES, TASKS, joint, marginals  # noqa: F401 (re-exported)
from maskpipe.train.losses import build_loss

#: ``for_mask`` values of age models trained on one mask state, in mask-index order.
HEADS = ("single", "multitask", *TASKS)


def head_tasks(head: str) -> tuple[str, ...]:
    """The tasks a head learns: all three, or a task model's own."""
    return tuple(TASKS) if head in ("single", "multitask") else (head,)


# A training row may leave tasks unknown (an external face trains only its model's chosen
# tasks): they ride in its label as ``class + NUM_CLASSES * bits``, bit i for the i-th task of
# TASKS, so the loaders, samplers and datasets carry one integer per row as before.
def hide_tasks(labels: np.ndarray, hidden: tuple[str, ...]) -> np.ndarray:
    """18-class ``labels`` with the tasks ``hidden`` marked unknown (:class:`HeadLoss` skips them)."""
    bits = sum(1 << list(TASKS).index(t) for t in hidden)
    return np.asarray(labels, dtype=np.int64) + NUM_CLASSES * bits


def known_tasks(target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(18-class targets, ``(N, 3)`` bool: which tasks each row's label knows) from labels that
    may carry :func:`hide_tasks`' marks."""
    bits = target // NUM_CLASSES
    known = torch.stack([(bits >> i) & 1 == 0 for i in range(len(TASKS))], dim=1)
    return target % NUM_CLASSES, known


def head_classes(head: str) -> int:
    """Output width of a head: 18, 3 + 2 + 3, or one task's classes."""
    return {"single": NUM_CLASSES, "multitask": sum(TASKS.values())}.get(head) or TASKS[head]


class MultiTaskNet(nn.Module):
    """A timm backbone (``num_classes=0``: pooled features) with a linear head per task."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleDict({t: nn.Linear(backbone.num_features, k) for t, k in TASKS.items()})
        self.pretrained_cfg = backbone.pretrained_cfg

    def get_classifier(self) -> nn.Module:
        return self.heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)
        return torch.cat([self.heads[t](features) for t in TASKS], dim=1)


def split_logits(logits: torch.Tensor, head: str) -> dict[str, torch.Tensor]:
    """The logits of each part a head predicts: ``all`` (18 classes) or task names."""
    if head == "single":
        return {"all": logits}
    if head == "multitask":
        return dict(zip(TASKS, torch.split(logits, list(TASKS.values()), dim=1), strict=True))
    return {head: logits}


def probabilities(logits: torch.Tensor, head: str) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
    """(18-class probabilities or None for a single-task model, per-task probabilities)."""
    parts = {k: torch.softmax(v.float(), dim=1) for k, v in split_logits(logits, head).items()}
    if head == "single":
        return parts["all"], marginals(parts["all"])
    if head == "multitask":
        return joint(parts), parts
    return None, parts


class HeadLoss(nn.Module):
    """The configured loss on each part of a head, summed with the task weights.

    Targets arrive as 18-class labels (or CutMix/MixUp's soft 18-class targets); each task
    head learns the marginal of that target. With ``partial``, labels may mark tasks unknown
    (:func:`hide_tasks`): each task's loss is then taken over the rows that know it only (a
    row knowing no task of the head adds nothing).
    """

    def __init__(self, head: str, specs: list[dict], class_counts: np.ndarray,
                 task_weights: dict[str, float], where: str, partial: bool = False):
        super().__init__()
        self.head, self.partial = head, partial
        counts = torch.as_tensor(class_counts, dtype=torch.float64)
        part_counts = {"all": counts, **marginals(counts[None])}
        parts = ["all"] if head == "single" else list(TASKS) if head == "multitask" else [head]
        self.weights = {p: (1.0 if p == "all" or head != "multitask" else task_weights[p]) for p in parts}
        self.losses = nn.ModuleDict({
            p: build_loss(specs, NUM_CLASSES if p == "all" else TASKS[p],
                          part_counts[p].reshape(-1).round().long().numpy(), where)
            for p in parts})

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        known = None
        if target.dim() == 1:
            if self.partial:  # only then: reading the marks costs a device sync per batch
                target, known = known_tasks(target)
            target = nn.functional.one_hot(target, NUM_CLASSES).float()
        targets = {"all": target, **marginals(target.float())}
        parts = split_logits(logits, self.head)
        if known is None:
            return sum(self.weights[p] * self.losses[p](parts[p], targets[p]) for p in self.losses)
        total = logits.sum() * 0.0  # a batch that knows no task still backpropagates (zeros)
        for p in self.losses:
            keep = known.all(dim=1) if p == "all" else known[:, list(TASKS).index(p)]
            if keep.any():
                total = total + self.weights[p] * self.losses[p](parts[p][keep], targets[p][keep])
        return total
