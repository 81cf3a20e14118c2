"""Test-time augmentation for image classifiers (``eval.tta``): average the logits over
mirrored and shifted copies of each batch, as airbench's evaluation does (airbench94.py
``infer``: the image and its mirror at weight 1/2, both shifted by one pixel up-left and
down-right at 1/4 together).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from torchkeel.data.kinds import kind_of
from torchkeel.errors import ConfigError

TTA_MODES = ("none", "flip", "flip_translate")


def check_tta(mode: str, kind: str) -> None:
    """TTA's views mirror and shift pixels: other kinds of data refuse it (``kind``: a kind name)."""
    if mode != "none" and not kind_of(kind).pixels:
        raise ConfigError(f"eval.tta: '{mode}' mirrors images; this data is {kind}: set eval.tta: none")


def tta_forward(model: nn.Module, x: torch.Tensor, mode: str) -> torch.Tensor:
    """Logits (B, classes) of ``x`` (B, C, H, W) averaged over the ``mode``'s views."""
    if mode == "none":
        return model(x)
    logits = _mirrored(model, x)
    if mode == "flip":
        return logits
    # translate by one pixel each way, the border filled by reflection (as airbench pads)
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")  # (B, C, H+2, W+2)
    up_left, down_right = padded[..., :-2, :-2], padded[..., 2:, 2:]
    shifted = 0.5 * (_mirrored(model, up_left) + _mirrored(model, down_right))
    return 0.5 * logits + 0.5 * shifted


def _mirrored(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (model(x) + model(x.flip(-1)))
