"""Optimizer and schedule factories: what they hold, the lr shapes they draw, exact resumes."""

from __future__ import annotations

import io

import pytest
import torch
import yaml
from torch import nn
from torch.optim import lr_scheduler as sched

from maskpipe.config import load_raw, schema_path
from maskpipe.io import MaskpipeError

from conftest import REPO
from maskpipe.train.optim import OPTIMIZERS, SCHEDULERS, make_optimizer, make_schedule

EPOCHS, STEPS = 6, 4


def _schema_defaults(section: str) -> dict:
    """The defaults of the REAL schema's ``section`` object, wherever it sits in the schema."""
    def find(node):
        if isinstance(node, dict):
            if isinstance(node.get(section), dict) and "properties" in node[section]:
                return node[section]["properties"]
            for value in node.values():
                if (hit := find(value)) is not None:
                    return hit
        return None

    props = find(yaml.safe_load(schema_path().read_text()))
    assert props is not None, f"no {section!r} object in the config schema"
    return {key: spec["default"] for key, spec in props.items()}


OPT = _schema_defaults("optimizer")
SCHED = _schema_defaults("scheduler")


def tiny(frozen_conv: bool = False) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    model[0].requires_grad_(not frozen_conv)
    return model


def train_step(model: nn.Module, opt: torch.optim.Optimizer) -> None:
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(4, 3, 8, 8, generator=g), torch.randint(0, 3, (4,), generator=g)
    opt.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


def snapshot(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def changed(module: nn.Module, before: list[torch.Tensor]) -> bool:
    return any(not torch.equal(p, b) for p, b in zip(module.parameters(), before))


# ---- optimizers -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizer_holds_frozen_params_and_trains_them_once_unfrozen(name):
    model = tiny(frozen_conv=True)
    opt = make_optimizer(model, {**OPT, "name": name})
    held = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(held) == sorted(id(p) for p in model.parameters())  # all, each once
    assert not model[0].weight.requires_grad and model[5].weight.requires_grad  # flags restored

    conv, head = snapshot(model[0]), snapshot(model[5])
    train_step(model, opt)
    assert changed(model[5], head) and not changed(model[0], conv)

    model[0].requires_grad_(True)  # the loop unfreezes the backbone
    train_step(model, opt)
    assert changed(model[0], conv)


def test_adamw_decays_weights_but_not_biases_or_norms():
    model = tiny()
    opt = make_optimizer(model, {**OPT, "name": "adamw", "lr": 0.1, "weight_decay": 0.5})
    decay = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decay == {id(p) for p in model.parameters() if p.ndim > 1}
    # A zero gradient leaves Adam's update at 0, so what changes is the decoupled decay alone.
    before = dict(model.named_parameters())
    before = {n: p.detach().clone() for n, p in before.items()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for n, p in model.named_parameters():
        expected = before[n] * (1 - 0.1 * 0.5) if p.ndim > 1 else before[n]
        torch.testing.assert_close(p.detach(), expected, msg=n)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_is_classical_momentum(momentum):
    opt = make_optimizer(tiny(), {**OPT, "name": "sgd", "momentum": momentum})
    assert isinstance(opt, torch.optim.SGD)
    assert all(g["momentum"] == momentum and not g["nesterov"] for g in opt.param_groups)


def test_madgrad_gets_momentum_and_decay_groups():
    from madgrad import MADGRAD

    opt = make_optimizer(tiny(), {**OPT, "name": "madgrad", "momentum": 0.8, "weight_decay": 0.01})
    assert isinstance(opt, MADGRAD) and all(g["momentum"] == 0.8 for g in opt.param_groups)
    assert sorted(g["weight_decay"] for g in opt.param_groups) == [0.0, 0.01]


@pytest.mark.parametrize("change, key", [({"name": "lamb"}, "optimizer.name"),
                                         ({"lr": 0.0}, "optimizer.lr"),
                                         ({"momentum": 1.0}, "optimizer.momentum")])
def test_optimizer_errors_name_the_key(change, key):
    with pytest.raises(MaskpipeError, match=rf"^{key}: "):
        make_optimizer(tiny(), {**OPT, **change})


# ---- schedules --------------------------------------------------------------------------------

def setup(name: str, opt_name: str = "adamw", **change):
    model = tiny()
    opt = make_optimizer(model, {**OPT, "name": opt_name, "lr": 1e-3})
    return opt, make_schedule(opt, {**SCHED, "name": name, **change}, EPOCHS, STEPS)


def run(opt, schedule, epochs: range, f1=lambda e: 0.5) -> list[tuple[float, float]]:
    """Step like the loop does; return each batch's (lr, momentum or beta1)."""
    seen = []
    for epoch in epochs:
        for _ in range(STEPS):
            g = opt.param_groups[0]
            seen.append((g["lr"], g["momentum"] if "momentum" in g else g["betas"][0]))
            opt.step()  # no gradients: a no-op that keeps torch's step-order check quiet
            schedule.after_batch()
        schedule.after_epoch(epoch, f1(epoch))
    return seen


def lrs(name: str, f1=lambda e: 0.5, **change) -> list[float]:
    opt, schedule = setup(name, **change)
    return [lr for lr, _ in run(opt, schedule, range(1, EPOCHS + 1), f1)]


def per_epoch(seq: list[float]) -> list[float]:
    assert all(seq[i] == seq[i - i % STEPS] for i in range(len(seq))), "lr changed within an epoch"
    return seq[::STEPS]


def test_cosine_warms_up_then_decays_to_min_lr():
    opt, schedule = setup("cosine", warmup_epochs=1, min_lr=1e-5)
    ep = per_epoch([lr for lr, _ in run(opt, schedule, range(1, EPOCHS + 1))])
    assert ep[0] == pytest.approx(1e-4) and ep[1] == pytest.approx(1e-3)
    assert all(a > b for a, b in zip(ep[1:], ep[2:])) and ep[-1] > 1e-5
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-5)  # reached after the last epoch


def test_cosine_shorter_than_its_warmup_skips_it():
    opt = make_optimizer(tiny(), {**OPT, "lr": 1e-3})
    make_schedule(opt, {**SCHED, "name": "cosine", "warmup_epochs": 3}, epochs=1, steps_per_epoch=2)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3)


def test_step_and_multistep_decay_after_their_epochs():
    assert per_epoch(lrs("step", step_size=2, gamma=0.5)) == pytest.approx(
        [1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4, 2.5e-4])
    assert per_epoch(lrs("multistep", milestones=[2, 5], gamma=0.1)) == pytest.approx(
        [1e-3, 1e-3, 1e-4, 1e-4, 1e-4, 1e-5])


def test_cyclic_climbs_to_max_lr_in_cycle_epochs_and_back():
    seq = lrs("cyclic", base_lr=1e-5, max_lr=1e-3, cycle_epochs=1.5)
    up = round(1.5 * STEPS)
    assert seq[0] == pytest.approx(1e-5) and seq[up] == pytest.approx(1e-3)
    assert seq[2 * up] == pytest.approx(1e-5)
    assert all(a < b for a, b in zip(seq[:up], seq[1:up + 1]))
    assert all(a > b for a, b in zip(seq[up:2 * up], seq[up + 1:2 * up + 1]))


def test_cyclic_leaves_adam_betas_and_cycles_sgd_momentum():
    opt, schedule = setup("cyclic")
    assert {b for _, b in run(opt, schedule, range(1, 3))} == {0.9}  # Adam's beta1, untouched
    opt, schedule = setup("cyclic", opt_name="sgd")
    momenta = [m for _, m in run(opt, schedule, range(1, 3))]
    assert max(momenta) == pytest.approx(OPT["momentum"]) and min(momenta) < OPT["momentum"]


def test_onecycle_peaks_near_30_percent_and_ends_low():
    opt, schedule = setup("onecycle", max_lr=1e-3)
    seq = [lr for lr, _ in run(opt, schedule, range(1, EPOCHS + 1))]
    peak = max(range(len(seq)), key=seq.__getitem__)
    assert 0.2 <= peak / len(seq) <= 0.35 and seq[peak] == pytest.approx(1e-3, rel=0.01)
    assert seq[0] == pytest.approx(1e-3 / 25) and seq[-1] < 1e-6
    for _ in range(3):  # a longer data loader than promised holds the last lr, no error
        schedule.after_batch()
    assert opt.param_groups[0]["lr"] == seq[-1]


def test_plateau_reduces_after_patience_epochs_without_improvement():
    scores = {1: 0.5, 2: 0.6}  # then 0.6 for ever: no improvement from epoch 3 on
    seq = per_epoch(lrs("plateau", f1=lambda e: scores.get(e, 0.6), patience=2, factor=0.5))
    # torch's ReduceLROnPlateau tolerates `patience` bad epochs and reduces after the next one.
    assert seq == pytest.approx([1e-3] * 5 + [5e-4])


def test_none_is_constant():
    assert set(lrs("none")) == {1e-3}


@pytest.mark.parametrize("opt_name", ["adamw", "sgd"])
@pytest.mark.parametrize("name", SCHEDULERS)
@pytest.mark.parametrize("with_optimizer", [True, False])
def test_resume_continues_the_identical_schedule(name, opt_name, with_optimizer):
    f1 = lambda e: [0.3, 0.5, 0.5, 0.5, 0.4, 0.4][e - 1]  # noqa: E731 - plateau must act
    change = {"milestones": [2, 4], "step_size": 2, "cycle_epochs": 0.75, "patience": 1}
    opt, schedule = setup(name, opt_name, **change)
    whole = run(opt, schedule, range(1, EPOCHS + 1), f1)

    opt, schedule = setup(name, opt_name, **change)
    first = run(opt, schedule, range(1, 4), f1)
    buf = io.BytesIO()  # through torch.save, as the loop's checkpoint does
    torch.save({"opt": opt.state_dict(), "sched": schedule.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    opt, schedule = setup(name, opt_name, **change)
    if with_optimizer:
        opt.load_state_dict(saved["opt"])
    schedule.load_state_dict(saved["sched"])
    assert first + run(opt, schedule, range(4, EPOCHS + 1), f1) == whole


def test_loading_another_schedules_state_names_the_key():
    _, cosine = setup("cosine")
    _, step = setup("step")
    with pytest.raises(MaskpipeError, match=r"^scheduler\.name: "):
        step.load_state_dict(cosine.state_dict())


@pytest.mark.parametrize("name, change, key", [
    ("warm", {}, "models.a.scheduler.name"),
    ("multistep", {"milestones": []}, "models.a.scheduler.milestones"),
    ("cyclic", {"base_lr": 1e-3, "max_lr": 1e-3}, "models.a.scheduler.base_lr"),
    ("cosine", {"min_lr": 1.0}, "models.a.scheduler.min_lr"),
    ("plateau", {"factor": 1.5}, "models.a.scheduler: plateau: Factor"),
])
def test_schedule_errors_name_the_key(name, change, key):
    opt = make_optimizer(tiny(), OPT)
    with pytest.raises(MaskpipeError, match=rf"^{key}"):
        make_schedule(opt, {**SCHED, "name": name, **change}, EPOCHS, STEPS, where="models.a.scheduler")


def test_schedule_needs_a_step_per_epoch():
    opt = make_optimizer(tiny(), OPT)
    with pytest.raises(MaskpipeError, match=r"^scheduler: steps_per_epoch is 0"):
        make_schedule(opt, {**SCHED, "name": "none"}, EPOCHS, 0)


# ---- the schedules of 846ca92 (hand-stepped torch schedulers) as the reference ---------------

def _old_schedule(opt: torch.optim.Optimizer, cfg: dict, epochs: int, steps: int):
    """(after_batch, after_epoch) of the schedules as 846ca92 built them, with torch's own
    schedulers; its cosine was timm's, so it is rebuilt here from torch's LinearLR warm-up
    from lr/10 and CosineAnnealingLR down to min_lr."""
    name, lr = cfg["name"], opt.param_groups[0]["lr"]
    momentum = opt.defaults.get("momentum", 0.0)
    band = {"cycle_momentum": isinstance(opt, torch.optim.SGD) and momentum > 0,
            "base_momentum": max(momentum - 0.1, 0.0), "max_momentum": momentum}
    nothing = lambda *a: None  # noqa: E731
    if name == "cosine":
        warmup = min(cfg["warmup_epochs"], epochs - 1)
        decay = sched.CosineAnnealingLR(opt, T_max=epochs - warmup, eta_min=cfg["min_lr"])
        inner = decay if not warmup else sched.SequentialLR(
            opt, [sched.LinearLR(opt, start_factor=0.1, total_iters=warmup), decay], milestones=[warmup])
        return nothing, lambda e, f1: inner.step()
    if name in ("step", "multistep"):
        inner = (sched.StepLR(opt, step_size=cfg["step_size"], gamma=cfg["gamma"]) if name == "step"
                 else sched.MultiStepLR(opt, milestones=cfg["milestones"], gamma=cfg["gamma"]))
        return nothing, lambda e, f1: inner.step()
    if name == "plateau":
        inner = sched.ReduceLROnPlateau(opt, mode="max", patience=cfg["patience"], factor=cfg["factor"])
        return nothing, lambda e, f1: inner.step(f1)
    if name == "cyclic":
        up = max(1, round(cfg["cycle_epochs"] * steps))
        inner = sched.CyclicLR(opt, base_lr=cfg["base_lr"], max_lr=cfg["max_lr"], step_size_up=up, **band)
        return inner.step, nothing
    if name == "onecycle":
        inner = sched.OneCycleLR(opt, max_lr=cfg["max_lr"], total_steps=epochs * steps, **band)
        return lambda: inner.step() if inner.last_epoch < inner.total_steps - 1 else None, nothing
    assert name == "none", name
    return nothing, nothing


def _configured_schedules() -> list:
    """Every model's optimizer and scheduler in config.yaml and the recipes, plus the kinds none
    of them uses yet (multistep, plateau, onecycle) with their schema defaults."""
    cases = []
    for path in [REPO / "config.yaml", *sorted((REPO / "workflow" / "recipes").glob("*.yaml"))]:
        mine = yaml.safe_load(path.read_text()).get("models") or {}
        raw = load_raw([REPO / "config.yaml", path] if path.name != "config.yaml" else path)
        cases += [pytest.param(raw["models"][m], id=f"{path.stem}:{m}") for m in mine]
    model = cases[0].values[0]
    extra = {"multistep": {"milestones": [5, 2], "gamma": 0.3}, "plateau": {"patience": 1, "factor": 0.5},
             "onecycle": {"max_lr": 1e-2}}
    for name, change in extra.items():
        cfg = {**model, "epochs": 7, "scheduler": {**SCHED, "name": name, **change}}
        cases.append(pytest.param(cfg, id=name))
    return cases


@pytest.mark.parametrize("model_cfg", _configured_schedules())
@pytest.mark.parametrize("steps", [1, 3])
def test_learning_rate_curves_equal_those_of_846ca92(model_cfg, steps):
    """Every configured schedule gives the lr, batch by batch, of the reference above (846ca92's
    hand-stepped torch schedulers): building them from timm's changes no curve."""
    f1 = [0.2, 0.4, 0.4, 0.4, 0.3, 0.5, 0.5, 0.5, 0.5, 0.5, 0.6, 0.6, 0.6] * 4  # plateau must act
    epochs, curves = model_cfg["epochs"], []
    for build in ("new", "old"):
        opt = make_optimizer(tiny(), model_cfg["optimizer"])
        if build == "new":
            schedule = make_schedule(opt, model_cfg["scheduler"], epochs, steps)
            after_batch, after_epoch = schedule.after_batch, schedule.after_epoch
        else:
            after_batch, after_epoch = _old_schedule(opt, model_cfg["scheduler"], epochs, steps)
        seen = []
        for epoch in range(1, epochs + 1):
            for _ in range(steps):
                seen.append(opt.param_groups[0]["lr"])
                opt.step()
                after_batch()
            after_epoch(epoch, f1[epoch - 1])
        curves.append(seen)
    new, old = curves
    assert len(set(old)) > 1 or model_cfg["scheduler"]["name"] == "none"  # the curve is a curve
    assert new == pytest.approx(old, rel=1e-9, abs=1e-15)
