"""Batched augmentation on the device, with per-sample randomness from torch's global RNG
(seeded by the run and saved in checkpoints, so augmented runs stay reproducible).

Inputs are normalised, so zero is the channel mean: padding, the area an affine transform
uncovers and the cutout square are all filled with the mean.

- crop: the classic CIFAR recipe: pad by ``p`` pixels, take a random HxW window per sample.
- flip: mirror left-right with probability 1/2 (off for digits and characters).
- affine: rotate / translate / scale per sample with one ``affine_grid`` + ``grid_sample``.
- cutout: a square of zeros at a random centre (DeVries & Taylor 2017, "Improved
  Regularization of CNNs with Cutout"); it may hang over the border, as in the paper.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F

from torchkeel.config_data import AugmentConfig
from torchkeel.data.bundle import DataSpec
from torchkeel.data.kinds import kind_of

Augment = Callable[[torch.Tensor], torch.Tensor]


def random_crop(x: torch.Tensor, pad: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H, W): each sample shifted by up to ``pad`` pixels."""
    b, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (b, 1), device=x.device)
    ox = torch.randint(0, 2 * pad + 1, (b, 1), device=x.device)
    rows = (oy + torch.arange(h, device=x.device))[:, :, None]  # (B, H, 1)
    cols = (ox + torch.arange(w, device=x.device))[:, None, :]  # (B, 1, W)
    batch = torch.arange(b, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)  # (B, C, H, W)


def random_flip(x: torch.Tensor) -> torch.Tensor:
    """Mirror each sample left-right with probability 1/2."""
    flip = torch.rand(x.shape[0], device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def affine(x: torch.Tensor, angle: torch.Tensor, zoom: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Per sample: turn by ``angle`` (B,) radians counter-clockwise (as torchvision's
    ``rotate``), zoom by ``zoom`` (B,), then move by ``shift`` (B, 2) fractions of the width
    and height (positive: right, down). Bilinear; the uncovered area is zero."""
    cos, sin = torch.cos(angle), torch.sin(angle)
    # affine_grid wants the map from output to input coordinates: the inverse of the forward
    # transform p_out = zoom * R p_in + t, i.e. p_in = R^-1 / zoom (p_out - t); y points down
    inverse = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1) / zoom[:, None, None]
    offset = -inverse @ (2 * shift)[:, :, None]  # (B, 2, 1); the image spans 2 grid units
    theta = torch.cat([inverse, offset], 2).to(x.dtype)  # (B, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (B, H, W, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_affine(x: torch.Tensor, rotate: float = 0.0, translate: float = 0.0, scale: float = 0.0) -> torch.Tensor:
    """Per sample: turn by up to ``rotate`` degrees either way, zoom by a factor in
    [1 - scale, 1 + scale], move by up to ``translate`` of the size in each direction."""
    b = x.shape[0]

    def uniform(limit: float, *shape: int) -> torch.Tensor:  # in [-limit, limit]
        return (torch.rand(b, *shape, device=x.device) * 2 - 1) * limit

    return affine(x, uniform(math.radians(rotate)), 1 + uniform(scale), uniform(translate, 2))


def cutout(x: torch.Tensor, size: int) -> torch.Tensor:
    """Zero a ``size`` x ``size`` square per sample, centred anywhere in the image."""
    b, _, h, w = x.shape
    cy = torch.randint(0, h, (b, 1, 1), device=x.device)
    cx = torch.randint(0, w, (b, 1, 1), device=x.device)
    rows = torch.arange(h, device=x.device)[None, :, None]  # (1, H, 1)
    cols = torch.arange(w, device=x.device)[None, None, :]  # (1, 1, W)
    top, left = cy - size // 2, cx - size // 2
    inside = (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size)  # (B, H, W)
    return x.masked_fill(inside[:, None], 0.0)


def build_augment(cfg: AugmentConfig, spec: DataSpec) -> Augment | None:
    """The configured steps as one function of a (B, C, H, W) batch, or None when there is
    nothing to do. ``flip: null`` follows the data (``spec.extra["flip"]``; off if unknown)."""
    if not kind_of(spec).pixels:  # crops and flips are for images
        return None
    flip = cfg.flip if cfg.flip is not None else bool(spec.extra.get("flip", False))
    steps: list[Augment] = []
    if cfg.crop:
        steps.append(partial(random_crop, pad=cfg.crop))
    if flip:
        steps.append(random_flip)
    if cfg.rotate or cfg.translate or cfg.scale:
        steps.append(partial(random_affine, rotate=cfg.rotate, translate=cfg.translate, scale=cfg.scale))
    if cfg.cutout:
        steps.append(partial(cutout, size=cfg.cutout))
    if not steps:
        return None

    def augment_batch(x: torch.Tensor) -> torch.Tensor:
        for step in steps:
            x = step(x)
        return x

    return augment_batch


def augment(x: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    """Every configured step on a batch of images (``flip: null`` counts as off)."""
    fn = build_augment(cfg, DataSpec("", "image", "classification", tuple(x.shape[1:])))
    return fn(x) if fn is not None else x


def is_active(cfg: AugmentConfig) -> bool:
    return bool(cfg.crop or cfg.flip or cfg.rotate or cfg.translate or cfg.scale or cfg.cutout)
