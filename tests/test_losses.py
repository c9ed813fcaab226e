import numpy as np
import pytest
import torch
import torch.nn.functional as F

from maskpipe.io import MaskpipeError
from maskpipe.train.losses import LOSSES, balanced_weights, build_loss, create_loss

C = 4
COUNTS = np.array([10, 5, 0, 25])


def spec(name: str, **kw) -> dict:
    return {"name": name, "weight": 1.0, "label_smoothing": 0.0, "class_weights": "none",
            "gamma": 2.0, **kw}


def loss(name: str, counts=COUNTS, **kw):
    return build_loss([spec(name, **kw)], C, counts)


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(16, C, generator=g)
    target = torch.arange(16) % C
    return logits, target


def confident(target: torch.Tensor, correct: bool = True) -> torch.Tensor:
    cls = target if correct else (target + 1) % C
    return F.one_hot(cls, C).float() * 20


ALL_SPECS = [spec("ce"), spec("ce", label_smoothing=0.1, class_weights="balanced"),
             spec("focal"), spec("focal", gamma=1.5, label_smoothing=0.1, class_weights="balanced"),
             spec("f1")]


def test_balanced_weights_as_documented():
    w = balanced_weights(COUNTS)
    np.testing.assert_allclose(w, [40 / 40, 40 / 20, 0.0, 40 / 100])
    # a balanced fold gets weight 1 everywhere
    np.testing.assert_allclose(balanced_weights(np.array([3, 3, 3])), 1.0)


@pytest.mark.parametrize("ls", [0.0, 0.1])
@pytest.mark.parametrize("cw", ["none", "balanced"])
def test_ce_matches_torch(batch, ls, cw):
    logits, target = batch
    w = torch.tensor(balanced_weights(COUNTS), dtype=torch.float32) if cw == "balanced" else None
    want = F.cross_entropy(logits, target, weight=w, label_smoothing=ls)
    got = loss("ce", label_smoothing=ls, class_weights=cw)(logits, target)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("ls", [0.0, 0.1])
@pytest.mark.parametrize("cw", ["none", "balanced"])
def test_focal_gamma0_is_ce(batch, ls, cw):
    logits, target = batch
    kw = {"label_smoothing": ls, "class_weights": cw}
    torch.testing.assert_close(loss("focal", gamma=0.0, **kw)(logits, target),
                               loss("ce", **kw)(logits, target))


def test_focal_downweights_easy_examples():
    logits = torch.tensor([[4.0, 0.0, 0.0, 0.0], [0.5, 0.0, 0.0, 0.0]])  # easy, hard
    target = torch.tensor([0, 0])
    ce = F.cross_entropy(logits, target, reduction="none")
    focal = torch.stack([loss("focal")(logits[i:i + 1], target[i:i + 1]) for i in range(2)])
    assert (focal < ce).all()
    assert focal[0] / ce[0] < 0.01 < 0.1 < focal[1] / ce[1]


def test_soft_f1_perfect_and_wrong(batch):
    _, target = batch
    f1 = loss("f1")
    assert f1(confident(target), target).item() < 1e-6
    assert f1(confident(target, correct=False), target).item() > 0.99
    assert 0.0 < f1(batch[0], target).item() < 1.0


def test_soft_f1_ignores_classes_absent_from_targets():
    target = torch.tensor([0, 1, 0, 1])  # classes 2 and 3 missing
    assert loss("f1")(confident(target), target).item() < 1e-6


@pytest.mark.parametrize("s", ALL_SPECS, ids=lambda s: f"{s['name']}-{s['class_weights']}")
def test_index_and_onehot_targets_agree(batch, s):
    logits, target = batch
    fn = build_loss([s], C, COUNTS)
    torch.testing.assert_close(fn(logits, target), fn(logits, F.one_hot(target, C).float()))


@pytest.mark.parametrize("s", ALL_SPECS, ids=lambda s: f"{s['name']}-{s['class_weights']}")
def test_mixed_soft_targets_and_gradients(batch, s):
    logits, target = batch
    lam = 0.7  # MixUp of the batch with itself flipped, as timm's Mixup does
    onehot = F.one_hot(target, C).float()
    soft = lam * onehot + (1 - lam) * onehot.flip(0)
    x = logits.clone().requires_grad_(True)
    value = build_loss([s], C, COUNTS)(x, soft)
    assert value.ndim == 0 and torch.isfinite(value)
    value.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_gradients_finite_on_saturated_logits():
    target = torch.tensor([0, 1, 2, 3])
    x = (confident(target) * 10).requires_grad_(True)
    build_loss([spec("focal", gamma=0.5), spec("f1"), spec("ce")], C)(x, target).backward()
    assert torch.isfinite(x.grad).all()


def test_weighted_sum_and_low_precision_logits(batch):
    logits, target = batch
    specs = [spec("ce", weight=0.3, label_smoothing=0.1), spec("f1", weight=0.7),
             spec("focal", weight=0.5, class_weights="balanced")]
    want = sum(s["weight"] * build_loss([{**s, "weight": 1.0}], C, COUNTS)(logits, target)
               for s in specs)
    combined = build_loss(specs, C, COUNTS)
    torch.testing.assert_close(combined(logits, target), want)
    half = combined(logits.bfloat16(), target)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, combined(logits.bfloat16().float(), target))


def test_class_weights_are_buffers():
    fn = build_loss([spec("ce", class_weights="balanced")], C, COUNTS)
    buffers = dict(fn.named_buffers())
    assert list(buffers) == ["losses.0.weight"]
    assert fn.to(torch.float64).losses[0].weight.dtype == torch.float64


@pytest.mark.parametrize("specs,counts,match", [
    ([spec("ce"), spec("focal", class_weights="balanced")], None,
     r"models\.m1\.loss\[1\]\.class_weights: 'balanced' needs"),
    ([spec("ce", class_weights="balanced")], np.array([1, 2]), r"models\.m1\.loss\[0\].*2 class counts"),
    ([spec("ce"), spec("dice")], None, r"models\.m1\.loss\[1\]\.name: unknown loss 'dice'"),
    ([spec("ce", class_weights="sqrt")], None, r"models\.m1\.loss\[0\]\.class_weights"),
    ([spec("f1", label_smoothing=0.1)], None, r"models\.m1\.loss\[0\]: f1 takes no"),
    ([spec("f1", class_weights="balanced")], COUNTS, r"models\.m1\.loss\[0\]: f1 takes no"),
    ([], None, r"models\.m1\.loss: no losses"),
])
def test_errors_name_the_item(specs, counts, match):
    with pytest.raises(MaskpipeError, match=match):
        build_loss(specs, C, counts, where="models.m1.loss")


def test_create_loss_builds_every_registered_name(batch):
    logits, target = batch
    onehot = F.one_hot(target, C).float()
    for name in LOSSES:
        assert torch.isfinite(create_loss(name)(logits, onehot)), name
    # focal with gamma 0 is cross-entropy, also with class weights and smoothing
    w = torch.tensor(balanced_weights(COUNTS), dtype=torch.float32)
    assert torch.allclose(create_loss("focal", w, 0.1, gamma=0.0)(logits, onehot),
                          create_loss("ce", w, 0.1)(logits, onehot))
    with pytest.raises(MaskpipeError, match=r"^models\.a\.loss\[0\]\.name: unknown loss 'dice'"):
        create_loss("dice", where="models.a.loss[0]")
