"""Convolutional classifiers for (C, H, W) images."""

from __future__ import annotations

from typing import Literal

from torch import nn

from torchkeel.data.bundle import DataSpec
from torchkeel.data.kinds import kind_of
from torchkeel.errors import ConfigError
from torchkeel.models.layers import Probability, Width
from torchkeel.models.layers import activation as make_activation


def simple_cnn(
    spec: DataSpec,
    *,
    channels: tuple[Width, ...] = (32, 64),
    hidden: Width = 128,
    activation: str = "relu",
    dropout: Probability = 0.0,
    batch_norm: bool = False,
    kernels: tuple[int, ...] | None = None,
    padding: Literal["same", "valid"] = "same",
) -> nn.Module:
    """The textbook CNN: conv-pool stages, a hidden layer, the output layer.

    Per entry of ``channels`` a conv (3x3 unless ``kernels`` gives each stage's size;
    ``padding`` same keeps the size, valid shrinks it by kernel - 1), [BatchNorm], activation
    and 2x2 max-pool; then a ``hidden``-unit layer and the output layer. The classic MNIST
    net (conv 24 5x5, pool, conv 32 3x3, pool, fc 256) is ``channels: [24, 32], kernels:
    [5, 3], padding: valid, hidden: 256``.

    The flattened size is worked out from the data's input shape (``conv_pool_side``), so the
    same network runs on 8x8 grey, 28x28 grey and 32x32 colour images.
    """
    c, h, w = image_shape(spec, "simple_cnn")
    if not channels:
        raise ConfigError("simple_cnn: model.channels needs at least one conv width, e.g. [32, 64]")
    if min(h, w) < 2 ** len(channels):
        raise ConfigError(
            f"simple_cnn with {len(channels)} pooling stages needs images of at least "
            f"{2 ** len(channels)}x{2 ** len(channels)} pixels; data '{spec.name}' has {h}x{w}"
        )
    kernels = kernels or (3,) * len(channels)
    if len(kernels) != len(channels) or min(kernels) < 1:
        raise ConfigError(
            f"simple_cnn: model.kernels needs one positive size per conv stage ({len(channels)}); got {list(kernels)}"
        )
    blocks: list[nn.Module] = []
    for out, k in zip(channels, kernels, strict=True):
        blocks.append(nn.Conv2d(c, out, k, padding=conv_padding(k, padding), bias=not batch_norm))
        if batch_norm:
            blocks.append(nn.BatchNorm2d(out))
        blocks += [make_activation(activation), nn.MaxPool2d(2)]
        c = out
    features = nn.Sequential(*blocks)
    for k in kernels:
        h, w = (conv_pool_side(side, k, conv_padding(k, padding)) for side in (h, w))
    if min(h, w) < 1:  # a valid conv or a pool took the image below one pixel
        raise ConfigError(
            f"simple_cnn: kernels {list(kernels)} with padding '{padding}' shrink {spec.input_shape[1]}x"
            f"{spec.input_shape[2]} images below one pixel; use padding 'same' or smaller kernels"
        )
    flat = c * h * w
    head: list[nn.Module] = [nn.Flatten()]
    if dropout:
        head.append(nn.Dropout(dropout))
    head += [nn.Linear(flat, hidden), make_activation(activation)]
    if dropout:
        head.append(nn.Dropout(dropout))
    head.append(nn.Linear(hidden, spec.output_size))
    return nn.Sequential(features, *head)


def conv_padding(kernel: int, padding: str) -> int | str:
    """Integer padding for odd kernels (torch's plain conv path, as the 3x3 default always was);
    torch's "same" mode for even ones, which need one more pixel on one side."""
    if padding == "valid":
        return 0
    return (kernel - 1) // 2 if kernel % 2 else "same"


def conv_pool_side(side: int, kernel: int, padding: int | str) -> int:
    """One side of an image after a stride-1 conv (``padding`` pixels each side, or "same")
    and a 2x2 pool in torch's floor mode; 0 when either takes it below one pixel. Worked out
    rather than found by a trial forward pass: the memory estimate builds the model on the meta
    device, where a forward pass runs torch's Python references, which import torch._dynamo
    (1.1 s; benchmarks/RESULTS.md, "the whole command")."""
    conv = side if padding == "same" else side + 2 * padding - kernel + 1
    return conv // 2 if conv >= 1 else 0


def image_shape(spec: DataSpec, model: str) -> tuple[int, int, int]:
    if not kind_of(spec).pixels or len(spec.input_shape) != 3:
        raise ConfigError(
            f"model '{model}' takes images (C, H, W); data '{spec.name}' gives {spec.kind} "
            f"samples of shape {tuple(spec.input_shape)}: use model 'mlp'"
        )
    c, h, w = spec.input_shape
    return c, h, w
