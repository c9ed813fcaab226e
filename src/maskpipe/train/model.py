"""Models by timm name, from a weights file, or with a clear stop when timm's pretrained weights
cannot be had offline."""

from __future__ import annotations

import contextlib
import difflib
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import torch
from torch import nn

from maskpipe.classes import NUM_CLASSES
from maskpipe.io import MaskpipeError
from maskpipe.train.weights import known_weights, load_weights, packaged_hint, resolve_weights_file


def create_model(arch: str, pretrained: bool = False, pretrained_file: str | None = None,
                 num_classes: int = NUM_CLASSES, head: str | None = None,
                 where: str = "models") -> nn.Module:
    """A timm model with an 18-class head, or the head ``head`` (see :mod:`maskpipe.train.heads`).

    ``pretrained_file`` (a path or ``pkg:MODULE/path``, see :mod:`maskpipe.train.weights`) loads
    those weights instead of timm's, and their normalisation into ``model.pretrained_cfg``; the
    classifier is always the new head.
    ``where`` is the config key named in errors (``models.NAME``).

    Raises:
        MaskpipeError: unknown architecture, missing or mismatched weights file, or pretrained
            weights that are neither cached nor downloadable (no network).
    """
    import timm

    from maskpipe.train.heads import MultiTaskNet, head_classes

    if head is not None:
        num_classes = 0 if head == "multitask" else head_classes(head)
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=1, cutoff=0.75)
        hint = f"did you mean {close[0]!r}?" if close else "see timm.list_models()"
        raise MaskpipeError(f"{where}.arch: {arch!r} is not a timm model ({hint})")
    if pretrained_file:
        path = resolve_weights_file(pretrained_file, where)
        model = timm.create_model(arch, num_classes=num_classes)
        load_weights(model, path, arch, where)
        known = known_weights(path)
        if known is not None:  # the normalisation follows the weights, not the architecture
            model.pretrained_cfg = {**model.pretrained_cfg, "mean": known.mean, "std": known.std}
    else:
        model = _timm_pretrained(arch, pretrained, num_classes, where)
    model = MultiTaskNet(model) if head == "multitask" else model
    if pretrained or pretrained_file:
        zero_classifier(model)
    return model


def zero_classifier(model: nn.Module) -> None:
    """Start the new classifier at zero: every class equally likely on pretrained features.

    timm initialises an EfficientNet's classifier uniformly in +-1/sqrt(classes) (its
    ``_init_weight_goog``), which on 1280 pretrained features gives logits in the tens: the first
    loss is ~14 for 18 classes, not ln(18) = 2.9, and a warm-up epoch at a small learning rate is
    spent undoing it (measured on the proving ground: train loss 4.7 after epoch 1). A zero head
    still learns (its gradient is features x (p - y)) and leaves the backbone's first steps
    to the labels.
    """
    for layer in model.get_classifier().modules():
        if isinstance(layer, nn.Linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)


def _timm_pretrained(arch: str, pretrained: bool, num_classes: int, where: str) -> nn.Module:
    """timm's model, with its own pretrained weights (cached or downloaded) if ``pretrained``."""
    import timm

    try:
        with _offline_unless_reachable(pretrained):
            return timm.create_model(arch, pretrained=pretrained, num_classes=num_classes)
    except (OSError, RuntimeError, ValueError) as e:
        if not pretrained:
            raise
        raise MaskpipeError(
            f"{where}: cannot load pretrained weights for {arch!r} ({type(e).__name__}); no network? "
            "Download them once where there is (they land in the Hugging Face cache), or set "
            f"pretrained_file: /path/to/weights.safetensors, or {packaged_hint(arch)}, "
            "or pretrained: false"
        ) from e


def _hub_reachable(timeout: float = 2.0) -> bool:
    from huggingface_hub import constants

    host = urlsplit(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


@contextlib.contextmanager
def _offline_unless_reachable(downloading: bool) -> Iterator[None]:
    """Use the Hugging Face cache only when the hub cannot be reached.

    Without network huggingface_hub retries for about a minute before giving up; in offline mode
    it loads cached weights at once or fails at once. ``HF_HUB_OFFLINE=1`` is honoured as well.
    """
    from huggingface_hub import constants

    if not downloading or constants.HF_HUB_OFFLINE or _hub_reachable():
        yield
        return
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = False
