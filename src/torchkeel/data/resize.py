"""Bringing images to one size and channel count, with torchvision's functional transforms
(antialiased bilinear resize, as PIL does), for training and for predict alike."""

from __future__ import annotations

import torch

from torchkeel.config_data import ImageConfig


def target_size(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    """Config ``size`` as (height, width): an int is a square."""
    if size is None:
        return None
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def fit_size(x: torch.Tensor, size: tuple[int, int], mode: str = "crop") -> torch.Tensor:
    """(..., C, h, w) -> (..., C, H, W). ``crop`` scales so the image covers the target,
    then center-crops (no distortion); ``stretch`` resizes straight to the target;
    ``letterbox`` scales so the whole image fits, at the top left, and pads the rest with 0
    (nothing is cut off: object detection's boxes stay inside)."""
    from torchvision.transforms.v2 import functional as F

    h, w = x.shape[-2:]
    if (h, w) == tuple(size):
        return x
    if mode == "stretch":
        return F.resize(x, list(size), antialias=True)
    if mode == "letterbox":
        _, _, fitted = letterbox_scales(h, w, size)
        inner = F.resize(x, list(fitted), antialias=True)
        return torch.nn.functional.pad(inner, (0, size[1] - fitted[1], 0, size[0] - fitted[0]))
    scale = max(size[0] / h, size[1] / w)
    covered = [max(size[0], round(h * scale)), max(size[1], round(w * scale))]
    return F.center_crop(F.resize(x, covered, antialias=True), list(size))


def letterbox_scales(h: int, w: int, size: tuple[int, int]) -> tuple[float, float, tuple[int, int]]:
    """How ``letterbox`` maps an h x w image into ``size``: the (y, x) scale factors of its
    pixels and the (height, width) it takes at the top left."""
    scale = min(size[0] / h, size[1] / w)
    fitted = (min(size[0], max(1, round(h * scale))), min(size[1], max(1, round(w * scale))))
    return fitted[0] / h, fitted[1] / w, fitted


def fit_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """(..., C, H, W) uint8 with C in {1, 3} -> ``channels`` channels (ITU-R 601 luma for grey)."""
    if x.shape[-3] == channels:
        return x
    if channels == 3:
        return x.expand(*x.shape[:-3], 3, *x.shape[-2:]).contiguous()
    from torchvision.transforms.v2 import functional as F

    return F.rgb_to_grayscale(x)


def fit_images(x: torch.Tensor, cfg: ImageConfig) -> torch.Tensor:
    """A named set's (N, C, H, W) uint8 pixels with ``data.image`` channels and size applied."""
    if cfg.channels != "auto":
        x = fit_channels(x, 1 if cfg.channels == "grey" else 3)
    size = target_size(cfg.size)
    if size is not None:
        x = torch.cat([fit_size(chunk, size, cfg.resize) for chunk in x.split(4096)])
    return x
