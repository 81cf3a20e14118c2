"""Batched augmentation on the device, with per-sample randomness from torch's global RNG
(seeded by the run and saved in checkpoints, so augmented runs stay reproducible).

The crop is the one of the classic CIFAR recipes: pad by ``p`` pixels with zeros (the
channel mean, since inputs are normalised), then take a random HxW window per sample.
"""

from __future__ import annotations

import torch

from torchkeel.config import AugmentConfig


def random_crop(x: torch.Tensor, pad: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H, W): each sample shifted by up to ``pad`` pixels."""
    b, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
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


def augment(x: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    if cfg.crop:
        x = random_crop(x, cfg.crop)
    if cfg.flip:
        x = random_flip(x)
    return x


def is_active(cfg: AugmentConfig) -> bool:
    return bool(cfg.crop or cfg.flip)
