"""Optimizers and learning-rate schedules by name: a small registry of builders per kind.

``create_optimizer(name, model, ...)`` and ``create_scheduler(name, optimizer, ...)`` look the
name up in :data:`OPTIMIZERS` / :data:`SCHEDULERS`; ``make_optimizer`` and ``make_schedule``
feed them a validated config section. timm builds the optimizers (``create_optimizer_v2``) and
the per-epoch schedules where its curve is the configured one (cosine with warm-up, step);
torch builds the per-batch ones timm lacks (cyclic, onecycle), multistep (timm's decays one epoch
before each milestone) and plateau (timm's PlateauLRScheduler is deprecated and keeps no patience
counters in its state, so a resumed run would decay at another epoch).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import torch
from torch import nn
from torch.optim import lr_scheduler as sched

from maskpipe.io import MaskpipeError

# The param-group fields a schedule drives; saved with it so a resume restores them exactly.
_DRIVEN = ("lr", "momentum", "betas")


@contextlib.contextmanager
def _all_trainable(model: nn.Module) -> Iterator[None]:
    """Mark every parameter trainable while the groups are built; restore the flags after.

    timm's ``param_groups_weight_decay`` skips parameters with ``requires_grad=False``, but the
    loop freezes the backbone only for its first epochs and the optimizer must already hold it
    when it is unfrozen. Frozen parameters get no gradient, so optimizers leave them untouched.
    """
    frozen = [p for p in model.parameters() if not p.requires_grad]
    for p in frozen:
        p.requires_grad_(True)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(False)


def _timm_optimizer(opt: str, model: nn.Module, lr: float, weight_decay: float,
                    momentum: float) -> torch.optim.Optimizer:
    from timm.optim import create_optimizer_v2

    return create_optimizer_v2(model, opt=opt, lr=lr, weight_decay=weight_decay, momentum=momentum)


def _madgrad(model: nn.Module, lr: float, weight_decay: float, momentum: float) -> torch.optim.Optimizer:
    from madgrad import MADGRAD
    from timm.optim import param_groups_weight_decay

    skip = getattr(model, "no_weight_decay", set)()  # as timm's factory does
    return MADGRAD(param_groups_weight_decay(model, weight_decay, no_weight_decay_list=skip),
                   lr=lr, momentum=momentum)


#: Optimizer builders by config name: ``(model, lr, weight_decay, momentum) -> optimizer``.
#: timm's "sgd" is Nesterov SGD, which torch refuses at momentum 0; "momentum" is classical.
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adamw": partial(_timm_optimizer, "adamw"),
    "adam": partial(_timm_optimizer, "adam"),
    "sgd": partial(_timm_optimizer, "momentum"),
    "madgrad": _madgrad,
}


def create_optimizer(name: str, model: nn.Module, lr: float, weight_decay: float = 0.0,
                     momentum: float = 0.9, where: str = "optimizer") -> torch.optim.Optimizer:
    """The optimizer ``name`` over ALL of ``model``'s parameters, frozen ones too.

    Norm weights and biases (every 1-d parameter) get no weight decay; momentum is used by sgd
    and madgrad. ``where`` is the config path named in errors.

    Raises:
        MaskpipeError: an unknown name or an out-of-range value, naming ``where`` and the key.
    """
    if name not in OPTIMIZERS:
        raise MaskpipeError(f"{where}.name: unknown optimizer {name!r} (known: {', '.join(OPTIMIZERS)})")
    if not lr > 0:
        raise MaskpipeError(f"{where}.lr: {lr} must be above 0")
    if not weight_decay >= 0:
        raise MaskpipeError(f"{where}.weight_decay: {weight_decay} must be at least 0")
    if not 0 <= momentum < 1:
        raise MaskpipeError(f"{where}.momentum: {momentum} must be in [0, 1)")
    with _all_trainable(model):
        return OPTIMIZERS[name](model, lr, weight_decay, momentum)


def make_optimizer(model: nn.Module, cfg: dict, where: str = "optimizer") -> torch.optim.Optimizer:
    """:func:`create_optimizer` from a ``models.NAME.optimizer`` section (name, lr, weight_decay, momentum)."""
    return create_optimizer(cfg["name"], model, cfg["lr"], cfg["weight_decay"], cfg["momentum"], where)


class Schedule:
    """One learning-rate schedule, stepped the way its kind needs.

    The loop calls ``after_batch`` after every optimizer step and ``after_epoch`` after each
    epoch's validation; ``on`` says which of the two advances it and how: ``batch`` (torch, per
    step), ``epoch`` (timm: ``step(e)`` sets the lr of 0-based epoch e, the one after the 1-based
    epoch just finished), ``count`` (torch, one ``step()`` per epoch), ``metric`` (torch's
    plateau, fed the validation macro F1) or None (constant).
    """

    def __init__(self, name: str, optimizer: torch.optim.Optimizer, inner: Any = None,
                 on: str | None = None) -> None:
        self.name, self.optimizer, self.inner, self.on = name, optimizer, inner, on

    def after_batch(self) -> None:
        """Advance a per-batch schedule (cyclic, onecycle) by one optimizer step."""
        if self.on != "batch":
            return
        # OneCycleLR raises past total_steps; an extra batch (a data loader longer than promised)
        # keeps the final, lowest lr instead of crashing the run.
        if isinstance(self.inner, sched.OneCycleLR) and self.inner.last_epoch >= self.inner.total_steps - 1:
            return
        self.inner.step()

    def after_epoch(self, epoch: int, val_f1: float) -> None:
        """Advance a per-epoch schedule after epoch ``epoch`` (from 1) scored ``val_f1``."""
        if self.on == "epoch":
            self.inner.step(epoch)
        elif self.on == "count":
            self.inner.step()
        elif self.on == "metric":
            self.inner.step(val_f1)

    def state_dict(self) -> dict:
        """Everything needed to continue the schedule exactly after a restart."""
        groups = [{k: g[k] for k in _DRIVEN if k in g} for g in self.optimizer.param_groups]
        inner = self.inner.state_dict() if self.inner is not None else None
        return {"name": self.name, "inner": inner, "groups": groups}

    def load_state_dict(self, state: dict) -> None:
        """Restore a ``state_dict``, including the lr (and momentum) the next step starts from.

        Raises:
            MaskpipeError: the state was saved by a different kind of schedule.
        """
        if state["name"] != self.name:
            raise MaskpipeError(f"scheduler.name: the saved state is for {state['name']!r}, "
                                f"not {self.name!r}; start the run afresh")
        if self.inner is not None:
            self.inner.load_state_dict(state["inner"])
        for group, saved in zip(self.optimizer.param_groups, state["groups"], strict=True):
            group.update(saved)


# Each builder: (optimizer, epochs, steps_per_epoch, lr, **section) -> (when it steps, scheduler).
# They take the keys they use by name and ignore the rest of the scheduler section.

def _cosine(optimizer, epochs, steps_per_epoch, lr, *, warmup_epochs, min_lr, **_):
    from timm.scheduler import CosineLRScheduler

    # Warm-up plus decay fit in ``epochs`` (a run shorter than its warm-up skips it), and
    # warm-up starts at lr/10 as the old loop did: timm's default of 0 wastes a 1-epoch one.
    warmup = min(warmup_epochs, epochs - 1)
    return "epoch", CosineLRScheduler(optimizer, t_initial=epochs - warmup, lr_min=min_lr,
                                      warmup_t=warmup, warmup_lr_init=lr * 0.1, warmup_prefix=True)


def _step(optimizer, epochs, steps_per_epoch, lr, *, step_size, gamma, **_):
    from timm.scheduler import StepLRScheduler

    return "epoch", StepLRScheduler(optimizer, decay_t=step_size, decay_rate=gamma)


def _multistep(optimizer, epochs, steps_per_epoch, lr, *, milestones, gamma, **_):
    # torch's, not timm's: timm's MultiStepLRScheduler decays one epoch before each milestone
    # (its "milestone m applies at t == m - 1" convention), torch's after it, as configured.
    return "count", sched.MultiStepLR(optimizer, milestones=milestones, gamma=gamma)


def _momentum_band(optimizer: torch.optim.Optimizer) -> dict:
    # Cycle momentum only for SGD (Smith's recipe): for Adam torch would overwrite beta1 and for
    # MADGRAD its momentum with a 0.8-0.9 band, which none of the teams' CyclicLR runs did.
    momentum = optimizer.defaults.get("momentum", 0.0)
    cycle = isinstance(optimizer, torch.optim.SGD) and momentum > 0
    return {"cycle_momentum": cycle, "base_momentum": max(momentum - 0.1, 0.0), "max_momentum": momentum}


def _cyclic(optimizer, epochs, steps_per_epoch, lr, *, base_lr, max_lr, cycle_epochs, **_):
    up = max(1, round(cycle_epochs * steps_per_epoch))
    return "batch", sched.CyclicLR(optimizer, base_lr=base_lr, max_lr=max_lr, step_size_up=up,
                                   **_momentum_band(optimizer))


def _onecycle(optimizer, epochs, steps_per_epoch, lr, *, max_lr, **_):
    return "batch", sched.OneCycleLR(optimizer, max_lr=max_lr, total_steps=epochs * steps_per_epoch,
                                     **_momentum_band(optimizer))


def _plateau(optimizer, epochs, steps_per_epoch, lr, *, patience, factor, **_):
    return "metric", sched.ReduceLROnPlateau(optimizer, mode="max", patience=patience, factor=factor)


def _constant(optimizer, epochs, steps_per_epoch, lr, **_):
    return None, None


#: Schedule builders by config name.
SCHEDULERS: dict[str, Callable[..., tuple[str | None, Any]]] = {
    "cosine": _cosine, "step": _step, "multistep": _multistep, "cyclic": _cyclic,
    "onecycle": _onecycle, "plateau": _plateau, "none": _constant,
}


def create_scheduler(name: str, optimizer: torch.optim.Optimizer, epochs: int, steps_per_epoch: int,
                     where: str = "scheduler", **settings: Any) -> Schedule:
    """The schedule ``name`` for ``epochs`` epochs of ``steps_per_epoch`` optimizer steps.

    Args:
        name: a key of :data:`SCHEDULERS`.
        optimizer: the optimizer whose groups' lr the schedule sets.
        epochs: the number of epochs the run trains.
        steps_per_epoch: optimizer steps per epoch (batches / gradient-accumulation steps).
        where: the config path of the section, for error messages.
        settings: the scheduler section's other keys (see the config schema); cyclic and
            onecycle take their lr range from them and ignore the optimizer's lr.

    Returns:
        The schedule; the optimizer's lr is already the first epoch's.

    Raises:
        MaskpipeError: an unknown name or an inconsistent setting, naming ``where`` and the key.
    """
    if name not in SCHEDULERS:
        raise MaskpipeError(f"{where}.name: unknown scheduler {name!r} (known: {', '.join(SCHEDULERS)})")
    if epochs < 1:
        raise MaskpipeError(f"{where}: epochs is {epochs}, the schedule needs at least 1")
    if steps_per_epoch < 1:
        raise MaskpipeError(f"{where}: steps_per_epoch is {steps_per_epoch} (no training batches?), "
                            "the schedule needs at least 1")
    if name == "multistep" and not settings["milestones"]:
        raise MaskpipeError(f"{where}.milestones: multistep needs at least one epoch to decay after")
    if name == "cyclic" and not settings["base_lr"] < settings["max_lr"]:
        raise MaskpipeError(f"{where}.base_lr: {settings['base_lr']} must be below max_lr {settings['max_lr']}")
    lr = max(g["lr"] for g in optimizer.param_groups)
    if name == "cosine" and settings["min_lr"] > lr:
        raise MaskpipeError(f"{where}.min_lr: {settings['min_lr']} is above the optimizer's lr {lr}")
    try:
        on, inner = SCHEDULERS[name](optimizer, epochs, steps_per_epoch, lr, **settings)
    except ValueError as e:  # torch's own range checks, e.g. a gamma or factor out of range
        raise MaskpipeError(f"{where}: {name}: {e}") from e
    return Schedule(name, optimizer, inner, on)


def make_schedule(optimizer: torch.optim.Optimizer, cfg: dict, epochs: int, steps_per_epoch: int,
                  where: str = "scheduler") -> Schedule:
    """:func:`create_scheduler` from a ``models.NAME.scheduler`` section."""
    settings = {k: v for k, v in cfg.items() if k != "name"}
    return create_scheduler(cfg["name"], optimizer, epochs, steps_per_epoch, where, **settings)
