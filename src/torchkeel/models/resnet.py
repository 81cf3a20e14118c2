"""CIFAR-style residual networks for small images (28-32 px; 8 px works too).

ImageNet ResNets open with a 7x7 stride-2 convolution and a max-pool, which shrink a 32x32
image to 8x8 before the first block; these keep full resolution in the stem (a 3x3 conv), as
He et al. 2016 (section 4.2) did for CIFAR-10.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from torchkeel.data.bundle import DataSpec
from torchkeel.models.cnn import image_shape
from torchkeel.models.layers import Probability, Width


def resnet(
    spec: DataSpec,
    *,
    depth: Literal[9, 18] = 9,
    width: Width = 64,
    dropout: Probability = 0.0,
) -> nn.Module:
    """CIFAR-style ResNet-9 or ResNet-18 for 8-32 px images; ``width`` scales every stage.

    ResNet-9 is David Page's DAWNBench network ("How to train your ResNet", 2018): prep conv,
    three conv-BN-ReLU-pool stages of width x2, x4, x8, residual pairs after the first and
    third. ResNet-18 is He et al.'s basic-block network (2-2-2-2 blocks of width x1, x2, x4,
    x8) with a 3x3 stem, as in the common CIFAR-10 implementations.
    """
    c, _, _ = image_shape(spec, "resnet")
    body = _resnet9(c, width) if depth == 9 else _resnet18(c, width)
    channels = width * 8
    head: list[nn.Module] = [nn.Flatten()]
    if dropout:
        head.append(nn.Dropout(dropout))
    head.append(nn.Linear(channels, spec.output_size))
    return nn.Sequential(body, *head)


def conv_bn(c_in: int, c_out: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class Residual(nn.Module):
    """x + f(x)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.inner(x)


class BasicBlock(nn.Module):
    """He et al. 2016's two-conv block; a strided 1x1 conv projects the shortcut when the
    shape changes (their option B)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.convs = nn.Sequential(conv_bn(c_in, c_out, stride), conv_bn(c_out, c_out, relu=False))
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.convs(x) + self.shortcut(x))


def _resnet9(c: int, w: int) -> nn.Sequential:
    # (B, c, H, W) -> (B, 8w, 1, 1); each pool halves the side, ceil_mode keeps odd sides (7 -> 4)
    def pool() -> nn.MaxPool2d:
        return nn.MaxPool2d(2, ceil_mode=True)

    return nn.Sequential(
        conv_bn(c, w),
        conv_bn(w, 2 * w),
        pool(),
        Residual(nn.Sequential(conv_bn(2 * w, 2 * w), conv_bn(2 * w, 2 * w))),
        conv_bn(2 * w, 4 * w),
        pool(),
        conv_bn(4 * w, 8 * w),
        pool(),
        Residual(nn.Sequential(conv_bn(8 * w, 8 * w), conv_bn(8 * w, 8 * w))),
        nn.AdaptiveMaxPool2d(1),
    )


def _resnet18(c: int, w: int) -> nn.Sequential:
    layers: list[nn.Module] = [conv_bn(c, w)]
    c_in = w
    for stage, c_out in enumerate((w, 2 * w, 4 * w, 8 * w)):
        stride = 1 if stage == 0 else 2
        layers += [BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1)]
        c_in = c_out
    layers.append(nn.AdaptiveAvgPool2d(1))
    return nn.Sequential(*layers)
