"""A user's own network, trained by name from a config: configs/digits-custom.yaml.

    model: {name: custom, target: "examples/custom_net.py:SeparableNet", kwargs: {width: 32}}

torchkeel imports this file, builds ``SeparableNet(spec=..., width=32)`` and trains it like a
built-in model (run folder, checkpoints, eval and predict included). A ``spec`` parameter
receives the DataSpec, so the network sizes itself from the data.
"""

import torch
from torch import nn


class SeparableNet(nn.Module):
    """Depthwise-separable convolutions (MobileNet's building block) and global pooling."""

    def __init__(self, spec, width: int = 32):
        super().__init__()
        channels, _, _ = spec.input_shape

        def separable(c_in: int, c_out: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(c_in, c_in, 3, padding=1, groups=c_in, bias=False),  # one 3x3 filter per channel
                nn.Conv2d(c_in, c_out, 1, bias=False),  # then mix channels
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            )

        self.features = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            separable(width, 2 * width),
            nn.MaxPool2d(2),
            separable(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(4 * width, spec.output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))  # (B, C, H, W) -> (B, classes)
