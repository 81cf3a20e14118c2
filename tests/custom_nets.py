"""User-style models for the ``custom`` model tests (imported by target string)."""

import math

import torch
from torch import nn


class AnyNet(nn.Module):
    """Sizes itself from the DataSpec: embeds token ids, flattens everything else."""

    def __init__(self, spec, hidden: int = 16):
        super().__init__()
        self.text = spec.kind == "text"
        if self.text:
            self.embed = nn.EmbeddingBag(spec.extra["vocab_size"], hidden, padding_idx=0)
            width = hidden
        else:
            width = math.prod(spec.input_shape)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, spec.output_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.embed(x) if self.text else x)


class NoSpecNet(nn.Module):
    """Takes only its own keyword arguments."""

    def __init__(self, inputs: int, outputs: int):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(inputs, outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def not_a_module(spec):
    return "a string"
