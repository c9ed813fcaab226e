"""Optimizer and learning-rate schedule factories, built by name from the config's sections."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.optim import lr_scheduler as sched

from maskpipe.io import MaskpipeError

OPTIMIZERS = ("adamw", "adam", "sgd", "madgrad")
SCHEDULES = ("cosine", "step", "multistep", "cyclic", "onecycle", "plateau", "none")
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


def make_optimizer(model: nn.Module, cfg: dict, where: str = "optimizer") -> torch.optim.Optimizer:
    """Build the optimizer named in ``cfg`` over ALL of ``model``'s parameters, frozen ones too.

    Norm weights and biases (every 1-d parameter) get no weight decay.

    Args:
        model: the network.
        cfg: ``{"name", "lr", "weight_decay", "momentum"}``; momentum is used by sgd and madgrad.
        where: the config path of ``cfg``, for error messages.

    Returns:
        The optimizer.

    Raises:
        MaskpipeError: an unknown name or an out-of-range value, naming ``where`` and the key.
    """
    name, lr, wd, momentum = cfg["name"], cfg["lr"], cfg["weight_decay"], cfg["momentum"]
    if name not in OPTIMIZERS:
        raise MaskpipeError(f"{where}.name: unknown optimizer {name!r} (known: {', '.join(OPTIMIZERS)})")
    if not lr > 0:
        raise MaskpipeError(f"{where}.lr: {lr} must be above 0")
    if not wd >= 0:
        raise MaskpipeError(f"{where}.weight_decay: {wd} must be at least 0")
    if not 0 <= momentum < 1:
        raise MaskpipeError(f"{where}.momentum: {momentum} must be in [0, 1)")
    from timm.optim import create_optimizer_v2, param_groups_weight_decay

    with _all_trainable(model):
        if name == "madgrad":
            from madgrad import MADGRAD

            skip = getattr(model, "no_weight_decay", set)()  # as timm's factory does
            groups = param_groups_weight_decay(model, wd, no_weight_decay_list=skip)
            return MADGRAD(groups, lr=lr, momentum=momentum)
        # timm's "sgd" is Nesterov SGD, which torch refuses at momentum 0; "momentum" is classical.
        opt = "momentum" if name == "sgd" else name
        return create_optimizer_v2(model, opt=opt, lr=lr, weight_decay=wd, momentum=momentum)


class Schedule:
    """One learning-rate schedule, stepped the way its kind needs.

    The loop calls ``after_batch`` after every optimizer step and ``after_epoch`` after each
    epoch's validation; each kind acts on the one call that suits it and ignores the other.
    """

    def __init__(self, name: str, optimizer: torch.optim.Optimizer, inner: Any = None) -> None:
        self.name, self.optimizer, self.inner = name, optimizer, inner

    def after_batch(self) -> None:
        """Advance a per-batch schedule (cyclic, onecycle) by one optimizer step."""
        if self.name == "cyclic":
            self.inner.step()
        elif self.name == "onecycle" and self.inner.last_epoch < self.inner.total_steps - 1:
            # OneCycleLR raises past total_steps; an extra batch (a data loader longer than
            # promised) keeps the final, lowest lr instead of crashing the run.
            self.inner.step()

    def after_epoch(self, epoch: int, val_f1: float) -> None:
        """Advance a per-epoch schedule after epoch ``epoch`` (from 1) scored ``val_f1``."""
        if self.name == "cosine":
            # timm schedulers are stateless in t: step(e) sets the lr of 0-based epoch e, which
            # is the epoch after the 1-based ``epoch`` just finished.
            self.inner.step(epoch)
        elif self.name in ("step", "multistep"):
            self.inner.step()
        elif self.name == "plateau":
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


def make_schedule(optimizer: torch.optim.Optimizer, cfg: dict, epochs: int, steps_per_epoch: int,
                  where: str = "scheduler") -> Schedule:
    """Build the schedule named in ``cfg`` for ``epochs`` epochs of ``steps_per_epoch`` steps.

    Args:
        optimizer: the optimizer whose groups' lr the schedule sets.
        cfg: the scheduler section (see the config schema); cyclic and onecycle take their lr
            range from it and ignore the optimizer's lr.
        epochs: the number of epochs the run trains.
        steps_per_epoch: optimizer steps per epoch (batches / gradient-accumulation steps).
        where: the config path of ``cfg``, for error messages.

    Returns:
        The schedule; the optimizer's lr is already the first epoch's.

    Raises:
        MaskpipeError: an unknown name or an inconsistent setting, naming ``where`` and the key.
    """
    name = cfg["name"]
    if name not in SCHEDULES:
        raise MaskpipeError(f"{where}.name: unknown scheduler {name!r} (known: {', '.join(SCHEDULES)})")
    if epochs < 1:
        raise MaskpipeError(f"{where}: epochs is {epochs}, the schedule needs at least 1")
    if steps_per_epoch < 1:
        raise MaskpipeError(f"{where}: steps_per_epoch is {steps_per_epoch} (no training batches?), "
                            "the schedule needs at least 1")
    if name == "multistep" and not cfg["milestones"]:
        raise MaskpipeError(f"{where}.milestones: multistep needs at least one epoch to decay after")
    if name == "cyclic" and not cfg["base_lr"] < cfg["max_lr"]:
        raise MaskpipeError(f"{where}.base_lr: {cfg['base_lr']} must be below max_lr {cfg['max_lr']}")
    lr = max(g["lr"] for g in optimizer.param_groups)
    if name == "cosine" and cfg["min_lr"] > lr:
        raise MaskpipeError(f"{where}.min_lr: {cfg['min_lr']} is above the optimizer's lr {lr}")
    try:
        return Schedule(name, optimizer, _inner(optimizer, cfg, epochs, steps_per_epoch, lr))
    except ValueError as e:  # torch's own range checks, e.g. a gamma or factor out of range
        raise MaskpipeError(f"{where}: {name}: {e}") from e


def _inner(optimizer: torch.optim.Optimizer, cfg: dict, epochs: int, steps_per_epoch: int,
           lr: float) -> Any:
    """The library scheduler behind ``cfg["name"]`` (None for a constant lr)."""
    name = cfg["name"]
    if name == "cosine":
        from timm.scheduler import CosineLRScheduler

        # Warm-up plus decay fit in ``epochs`` (a run shorter than its warm-up skips it), and
        # warm-up starts at lr/10 as the old loop did: timm's default of 0 wastes a 1-epoch one.
        warmup = min(cfg["warmup_epochs"], epochs - 1)
        return CosineLRScheduler(optimizer, t_initial=epochs - warmup, lr_min=cfg["min_lr"],
                                 warmup_t=warmup, warmup_lr_init=lr * 0.1, warmup_prefix=True)
    if name == "step":
        return sched.StepLR(optimizer, step_size=cfg["step_size"], gamma=cfg["gamma"])
    if name == "multistep":
        return sched.MultiStepLR(optimizer, milestones=cfg["milestones"], gamma=cfg["gamma"])
    # Cycle momentum only for SGD (Smith's recipe): for Adam torch would overwrite beta1 and for
    # MADGRAD its momentum with a 0.8-0.9 band, which none of the teams' CyclicLR runs did.
    momentum = optimizer.defaults.get("momentum", 0.0)
    cycle = isinstance(optimizer, torch.optim.SGD) and momentum > 0
    band = {"cycle_momentum": cycle, "base_momentum": max(momentum - 0.1, 0.0), "max_momentum": momentum}
    if name == "cyclic":
        up = max(1, round(cfg["cycle_epochs"] * steps_per_epoch))
        return sched.CyclicLR(optimizer, base_lr=cfg["base_lr"], max_lr=cfg["max_lr"],
                              step_size_up=up, **band)
    if name == "onecycle":
        return sched.OneCycleLR(optimizer, max_lr=cfg["max_lr"], total_steps=epochs * steps_per_epoch,
                                **band)
    if name == "plateau":
        return sched.ReduceLROnPlateau(optimizer, mode="max", patience=cfg["patience"],
                                       factor=cfg["factor"])
    return None
