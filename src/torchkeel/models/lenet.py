"""LeNet-5 (LeCun, Bottou, Bengio & Haffner 1998), sized from the DataSpec."""

from __future__ import annotations

from typing import Literal

from torch import nn

from torchkeel.data.bundle import DataSpec
from torchkeel.errors import ConfigError
from torchkeel.models.cnn import conv_pool_side, image_shape
from torchkeel.models.layers import Probability
from torchkeel.models.layers import activation as make_activation


def lenet5(
    spec: DataSpec,
    *,
    activation: str = "tanh",
    pool: Literal["avg", "max"] = "avg",
    dropout: Probability = 0.0,
) -> nn.Module:
    """LeNet-5: conv 6@5x5, pool, conv 16@5x5, pool, fc 120, fc 84, output.

    The 1998 network saw 32x32 inputs; smaller images get the first convolution padded by 2
    (the usual way to fit 28x28 MNIST, which then sees the original 32x32 geometry), and images
    too small for a second unpadded 5x5 convolution (digits' 8x8) pad that one too. Defaults
    follow the paper's tanh and average ("subsampling") pooling; ``relu`` and ``max`` are the
    modern variant.
    """
    c, h, w = image_shape(spec, "lenet5")
    if min(h, w) < 4:
        raise ConfigError(f"lenet5 needs images of at least 4x4 pixels; data '{spec.name}' has {h}x{w}")
    pad1 = 2 if min(h, w) < 32 else 0
    pooled = (min(h, w) + 2 * pad1 - 4) // 2  # side after conv1 and the first pool
    pad2 = 0 if pooled >= 10 else 2
    pooling = nn.AvgPool2d if pool == "avg" else nn.MaxPool2d
    features = nn.Sequential(
        nn.Conv2d(c, 6, 5, padding=pad1),
        make_activation(activation),
        pooling(2),
        nn.Conv2d(6, 16, 5, padding=pad2),
        make_activation(activation),
        pooling(2),
    )
    sides = [conv_pool_side(conv_pool_side(side, 5, pad1), 5, pad2) for side in (h, w)]
    flat = 16 * sides[0] * sides[1]  # 16 x 5 x 5 = 400 for 28 and 32 px
    head: list[nn.Module] = [nn.Flatten(), nn.Linear(flat, 120), make_activation(activation)]
    if dropout:
        head.append(nn.Dropout(dropout))
    head += [nn.Linear(120, 84), make_activation(activation), nn.Linear(84, spec.output_size)]
    return nn.Sequential(features, *head)
