"""airbench's fast CIFAR-10 network (Keller Jordan, "94% on CIFAR-10 in 3.29 seconds on a
single GPU", arXiv:2404.00498; github.com/KellerJordan/cifar10-airbench, airbench94.py).

A frozen 2x2 whitening conv initialised from the training images' patch covariance, GELU,
then three conv groups (conv 3x3, max-pool 2, BatchNorm, GELU, conv 3x3, BatchNorm, GELU),
a global max-pool and a linear head scaled by 1/9. BatchNorm keeps a fixed unit gain (only
its bias learns), a high momentum and a tiny epsilon, as airbench sets them.
"""

from __future__ import annotations

import torch
from torch import nn

from torchkeel.data.bundle import DataSpec
from torchkeel.errors import ConfigError
from torchkeel.models.cnn import image_shape
from torchkeel.models.layers import Width

WHITEN_SAMPLES = 5000  # airbench whitens from the first 5,000 training images


def airbench(
    spec: DataSpec,
    *,
    widths: tuple[Width, Width, Width] = (64, 256, 256),
    whiten: bool = True,
    bn_momentum: float = 0.4,
    bn_eps: float = 1e-12,
    scale: float = 1 / 9,
) -> nn.Module:
    """airbench94's CIFAR-10 net: whitening conv (fit to the data), 3 conv groups, BN, GELU.

    ``whiten``: initialise the first conv from the training images (patch covariance
    eigenvectors, frozen) before training; off leaves it a trainable random conv.
    ``bn_momentum`` is torch's convention (airbench's 0.6 is 1 - 0.4); ``scale`` multiplies
    the logits (airbench: 1/9), which matters with label smoothing and a high lr.
    """
    c, h, w = image_shape(spec, "airbench")
    if min(h, w) < 4:
        raise ConfigError(f"airbench needs images of at least 4x4 pixels; data '{spec.name}' has {h}x{w}")
    if not 0.0 < bn_momentum < 1.0 or bn_eps <= 0.0:
        raise ConfigError("airbench: model.bn_momentum must be in (0, 1) and model.bn_eps above 0")
    stem = Whitening(c, kernel=2, frozen=whiten)
    groups, width = [], stem.out_channels
    for out in widths:
        groups.append(conv_group(width, out, bn_momentum, bn_eps))
        width = out
    head = nn.Linear(width, spec.output_size, bias=False)
    return nn.Sequential(stem, nn.GELU(), *groups, nn.AdaptiveMaxPool2d(1), nn.Flatten(), head, Scale(scale))


def conv_group(inputs: int, outputs: int, momentum: float, eps: float) -> nn.Sequential:
    """conv, pool, BN, GELU, conv, BN, GELU; the pool rounds up so small images keep a pixel."""
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, 3, padding="same", bias=False),
        nn.MaxPool2d(2, ceil_mode=True),
        batch_norm(outputs, momentum, eps),
        nn.GELU(),
        nn.Conv2d(outputs, outputs, 3, padding="same", bias=False),
        batch_norm(outputs, momentum, eps),
        nn.GELU(),
    )


def batch_norm(channels: int, momentum: float, eps: float) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels, eps=eps, momentum=momentum)
    bn.weight.requires_grad_(False)  # airbench: a fixed unit gain, only the bias learns
    return bn


class Scale(nn.Module):
    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


class Whitening(nn.Module):
    """A 2x2 conv whose filters whiten image patches: ``fit_data(x)`` sets them to the
    eigenvectors of the patches' covariance scaled by 1/sqrt(eigenvalue), each with its
    negative (so a ReLU-like activation keeps both signs): out_channels = 2 * C * k * k.
    The ``fitted`` buffer travels with the weights, so a loaded model is never refitted."""

    fit_needs = "the training images in memory; set model.whiten: false"

    def __init__(self, channels: int, kernel: int = 2, frozen: bool = True, eps: float = 5e-4):
        super().__init__()
        self.kernel, self.eps = kernel, eps
        self.out_channels = 2 * channels * kernel * kernel
        self.conv = nn.Conv2d(channels, self.out_channels, kernel, bias=True)
        self.conv.weight.requires_grad_(not frozen)
        self.register_buffer("fitted", torch.tensor(not frozen))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)  # (B, 2*C*k*k, H-k+1, W-k+1)

    @torch.no_grad()
    def fit_data(self, x: torch.Tensor) -> None:
        """x: (N, C, H, W) training images, normalised as the model will see them."""
        if bool(self.fitted):
            return
        k = self.kernel
        x = x[:WHITEN_SAMPLES].to(self.conv.weight.device).float()
        patches = x.unfold(2, k, 1).unfold(3, k, 1)  # (N, C, H', W', k, k)
        patches = patches.transpose(1, 3).reshape(-1, x.shape[1] * k * k)  # (N*H'*W', C*k*k)
        patches = patches - patches.mean(0)
        covariance = patches.T @ patches / len(patches)  # (C*k*k, C*k*k)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance.double())
        filters = (eigenvectors.T / torch.sqrt(eigenvalues.clamp_min(0) + self.eps)[:, None]).float()
        filters = filters.reshape(-1, x.shape[1], k, k)  # rows were flattened as (C, k_h, k_w): a conv's layout
        self.conv.weight.copy_(torch.cat([filters, -filters]).to(self.conv.weight))
        self.fitted.fill_(True)
