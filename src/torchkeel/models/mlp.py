"""Multi-layer perceptron: flattens any input (tables, images) to a vector."""

from __future__ import annotations

import math

from torch import nn

from torchkeel.data.bundle import DataSpec
from torchkeel.models.layers import Probability, Width
from torchkeel.models.layers import activation as make_activation


def mlp(
    spec: DataSpec,
    *,
    hidden: tuple[Width, ...] = (256, 128),
    activation: str = "relu",
    dropout: Probability = 0.0,
    batch_norm: bool = False,
) -> nn.Module:
    """Multi-layer perceptron on flattened inputs (tables, images, series windows).

    Linear -> [BatchNorm] -> activation -> [Dropout] per hidden layer, then a linear head.
    """
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(spec.input_shape)
    for size in hidden:
        layers.append(nn.Linear(width, size, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm1d(size))
        layers.append(make_activation(activation))
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = size
    layers.append(nn.Linear(width, spec.output_size))
    return nn.Sequential(*layers)
