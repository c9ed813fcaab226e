"""Where tensors are made, checked without a GPU.

On CUDA, a tensor made on the CPU beside the model's tensors fails (``torch.cat`` of a CPU and a
CUDA tensor); on a CPU-only machine nothing shows it. Two checks catch it here:
- the ``meta`` device: every step of a training batch and of a prediction runs on meta tensors,
  where mixing in a CPU tensor fails exactly as on CUDA;
- a record of every tensor factory call (torch.full, zeros, tensor, ...) made by maskpipe code
  without ``device=`` while a whole fold trains (also as a pseudo-label round's ``retrain``,
  with eval photos added) and predicts: only the calls that make CPU tensors by design (the
  data feed, the sampler, a loss's weights before ``.to(device)``) may.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch.overrides import TorchFunctionMode

import maskpipe
from maskpipe.config import load_raw
from maskpipe.train.predict import load_checkpoint, predict_probs, row_tensor
from maskpipe.train.augment import build_transforms
from maskpipe.train.build import pseudo_split
from maskpipe.train.data import CropDataset, join_split
from maskpipe.train.heads import HeadLoss, probabilities
from maskpipe.train.loop import TrainJob, train_fold
from maskpipe.train.model import create_model

from conftest import write_pseudo_labels

HEADS = ["single", "multitask", "mask", "gender", "age"]
LOSSES = [{"name": "ce", "weight": 1.0, "label_smoothing": 0.1, "class_weights": "balanced", "gamma": 2.0},
          {"name": "focal", "weight": 0.5, "label_smoothing": 0.0, "class_weights": "balanced", "gamma": 2.0},
          {"name": "f1", "weight": 0.5, "label_smoothing": 0.0, "class_weights": "none", "gamma": 2.0}]
TASK_WEIGHTS = {"mask": 1.0, "gender": 0.5, "age": 2.0}
COUNTS = torch.arange(1, 19).numpy()

FACTORIES = {torch.full, torch.zeros, torch.ones, torch.empty, torch.arange, torch.tensor,
             torch.as_tensor, torch.rand, torch.randn, torch.randint, torch.eye, torch.linspace,
             torch.from_numpy, torch.scalar_tensor}
#: maskpipe functions that make CPU tensors on purpose, and why that is right on CUDA too.
CPU_BY_DESIGN = {
    "CropDataset.__getitem__",  # the loader's batches; the loop moves them (pinned, non_blocking)
    "balanced_sampler",  # the sampler's weights stay with the sampler, on the CPU
    "HeadLoss.__init__",  # class counts, read once to make the loss weights
    "build_loss",  # the loss weights: buffers, moved by HeadLoss(...).to(device) (checked below)
    "_class_weights",  # the same weights, made by build_loss's helper
}
SRC = Path(maskpipe.__file__).parent


class FactoryRecorder(TorchFunctionMode):
    """Records ``function (file:line)`` of each factory call without ``device=`` from maskpipe."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: dict[str, set[str]] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in FACTORIES and kwargs.get("device") is None:
            frame = sys._getframe(1)  # the caller itself: torch's own calls (collate) are torch's
            if Path(frame.f_code.co_filename).is_relative_to(SRC):
                where = f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno} {func.__name__}"
                self.calls.setdefault(frame.f_code.co_qualname, set()).add(where)
        return func(*args, **kwargs)


def _batch(head: str, device: str):
    model = create_model("test_resnet", head=head).to(device)
    loss_fn = HeadLoss(head, LOSSES, COUNTS, TASK_WEIGHTS, "models.t.loss").to(device)
    x = torch.randn(4, 3, 32, 32, device=device)
    y = torch.tensor([0, 5, 11, 17], device=device)
    return model, loss_fn, x, y


@pytest.mark.parametrize("head", HEADS)
def test_a_training_batch_and_a_prediction_stay_on_the_models_device(head):
    model, loss_fn, x, y = _batch(head, "meta")
    assert all(b.device.type == "meta" for b in loss_fn.buffers())
    soft = torch.softmax(torch.randn(4, 18, device="meta"), 1)  # CutMix / MixUp targets
    for target in (y, soft):
        logits = model(x)
        loss_fn(logits, target).backward()
    p18, tasks = probabilities(logits, head)
    rows = row_tensor(logits, head)
    assert rows.device.type == "meta" and rows.shape == (4, 18 + 8) and rows.dtype == torch.float32
    assert all(t.device.type == "meta" for t in [*tasks.values(), *([p18] if p18 is not None else [])])


@pytest.mark.parametrize("amp", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("head", ["single", "multitask", "age"])
def test_losses_and_probabilities_are_float32_under_autocast(head, amp):
    model, loss_fn, x, y = _batch(head, "cpu")
    with torch.autocast("cpu", dtype=amp):
        logits = model(x)
        loss = loss_fn(logits, y)
    assert logits.dtype == amp  # autocast is really on
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    p18, tasks = probabilities(logits, head)
    assert {t.dtype for t in tasks.values()} == {torch.float32}
    assert row_tensor(logits, head).dtype == torch.float32


@pytest.fixture(scope="module")
def setup(tiny_run):
    config_path, layout = tiny_run
    return load_raw(config_path), layout


CASES = [("single", None, False), ("multitask", None, False), ("age", "wear", False),
         # retrain (a pseudo-label round): the round's eval photos added to the training rows
         ("single", None, True), ("age", "wear", True)]


@pytest.mark.parametrize("head,for_mask,with_pseudo", CASES)
def test_training_and_prediction_make_no_tensor_without_a_device(setup, tmp_path, head, for_mask,
                                                                  with_pseudo):
    raw, L = setup
    cfg = copy.deepcopy(raw["models"]["a"])
    cfg.update(head=head, for_mask=for_mask, loss=LOSSES, ema_decay=0.9, sampler="balanced",
               mixup={**cfg["mixup"], "prob": 1.0, "cutmix_alpha": 1.0})
    extra = None
    if with_pseudo:
        extra = (L.crops("eval"), L.crop_index("eval"), write_pseudo_labels(L, tmp_path / "pseudo.csv"))
    recorder = FactoryRecorder()
    with recorder:
        metrics = train_fold(TrainJob("a", 0, L.crops("train"), L.crop_index("train"), L.labels(),
                                      L.folds(), tmp_path / "c.pt", tmp_path / "m.json",
                                      tmp_path / "tb", pseudo=extra),
                             {"train": raw["train"], "models.a": cfg})
        model, ckpt = load_checkpoint(tmp_path / "c.pt", torch.device("cpu"))
        tf = build_transforms(tuple(ckpt["image_size"]), ckpt["mean"], ckpt["std"], [], None)
        rows = join_split(L.crop_index("train"), L.labels(), L.folds())["row"].to_numpy()[:5]
        predict_probs(model, CropDataset(L.crops("train"), rows, None, tf), torch.device("cpu"),
                      {"hflip": True, "zooms": [0.9]}, 4, "t", head)
    assert "CropDataset.__getitem__" in recorder.calls  # the recorder sees maskpipe's calls
    if with_pseudo:  # the eval photos really were in the training rows (an age model's: its state's)
        chosen = pseudo_split(L.crop_index("eval"), extra[2], cfg)
        assert metrics["n_pseudo"] == len(chosen) > 0
        assert for_mask is None or len(chosen) < len(pd.read_csv(extra[2]))
    unexpected = {k: v for k, v in recorder.calls.items() if k not in CPU_BY_DESIGN}
    assert not unexpected, f"tensors made without device= (CPU tensors beside CUDA ones): {unexpected}"
