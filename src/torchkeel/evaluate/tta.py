"""Test-time augmentation for images (``eval.tta``): average the logits over mirrored and
shifted copies of each batch, as airbench's evaluation does (airbench94.py ``infer``: the
image and its mirror at weight 1/2, both shifted by one pixel up-left and down-right at 1/4
together). A model that outputs a map the size of its input (segmentation's (B, K, H, W))
has each view's map mirrored and shifted back before the average, so every pixel's scores
are the same pixel's.
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
    """Logits of ``x`` (B, C, H, W), (B, classes) or (B, K, H, W), averaged over the ``mode``'s views."""
    if mode == "none":
        return model(x)
    logits = _mirrored(model, x)
    if mode == "flip":
        return logits
    # translate by one pixel each way, the border filled by reflection (as airbench pads)
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")  # (B, C, H+2, W+2)
    up_left, down_right = padded[..., :-2, :-2], padded[..., 2:, 2:]
    shifted = 0.5 * (_shifted_back(_mirrored(model, up_left), 1) + _shifted_back(_mirrored(model, down_right), -1))
    return 0.5 * logits + 0.5 * shifted


def _dense(out: torch.Tensor) -> bool:
    return out.ndim == 4  # a map per image: its columns follow the input's


def _mirrored(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    mirror = model(x.flip(-1))
    return 0.5 * (model(x) + (mirror.flip(-1) if _dense(mirror) else mirror))


def _shifted_back(out: torch.Tensor, step: int) -> torch.Tensor:
    """The map of a view whose content sits ``step`` pixels down-right of the input's (1: the
    up-left window of the padded input; -1: the down-right one) moved back, the row and column
    it lacks repeated from its edge; class scores (B, classes) as they are."""
    if not _dense(out):
        return out
    if step == 1:  # out[i + 1, j + 1] is pixel (i, j)'s
        return F.pad(out, (0, 1, 0, 1), mode="replicate")[..., 1:, 1:]
    return F.pad(out, (1, 0, 1, 0), mode="replicate")[..., :-1, :-1]
