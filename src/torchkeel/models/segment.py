"""Segmentation networks: (B, C, H, W) images -> (B, K, H, W) logits at the input's size.

- ``unet``: Ronneberger et al. 2015's encoder-decoder with skip connections (two 3x3
  conv-BN-ReLU per level, max-pool down, bilinear up, concatenation). Its encoder is either
  trained from scratch (``widths`` per level) or the ImageNet-pretrained EfficientNet-Lite0
  (``encoder: efficientnet_lite0``), whose maps at strides 2-32 feed the same kind of decoder.
- ``lraspp_mobilenet_v3`` and ``deeplabv3_mobilenet_v3``: torchvision's models (Howard et
  al. 2019; Chen et al. 2017) with a new classifier for the data's classes; no weights are
  downloaded unless ``pretrained`` names them.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from torchkeel.data.bundle import DataSpec
from torchkeel.models.cnn import image_shape
from torchkeel.models.layers import Probability
from torchkeel.models.vision import adapt_input_conv, on_meta, pretrained_state, report_loaded

LITE_DECODER = (256, 128, 64, 32, 16)  # decoder widths from stride 32 up to stride 2 (lite0 encoder)


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    """Two 3x3 conv-BN-ReLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class Decoder(nn.Module):
    """From the deepest map up: upsample to the next skip's size, concatenate, conv block."""

    def __init__(self, skips: list[int], deepest: int, widths: list[int]):
        super().__init__()
        blocks, c = [], deepest
        for skip, width in zip(skips, widths, strict=True):
            blocks.append(conv_block(c + skip, width))
            c = width
        self.blocks = nn.ModuleList(blocks)
        self.width = c

    def forward(self, deepest: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        x = deepest
        for block, skip in zip(self.blocks, skips, strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], 1))
        return x


class UNet(nn.Module):
    def __init__(self, channels: int, classes: int, widths: list[int], dropout: float):
        super().__init__()
        self.down = nn.ModuleList()
        c = channels
        for w in widths[:-1]:
            self.down.append(conv_block(c, w))
            c = w
        self.bottom = conv_block(c, widths[-1])
        self.decoder = Decoder(list(reversed(widths[:-1])), widths[-1], list(reversed(widths[:-1])))
        self.head = nn.Sequential(nn.Dropout2d(dropout), nn.Conv2d(widths[0], classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2, ceil_mode=True)  # odd sides round up; the decoder resizes back
        return self.head(self.decoder(self.bottom(x), skips[::-1]))


class EncoderUNet(nn.Module):
    """A feature-pyramid encoder (maps at strides 2, 4, 8, 16, 32) and a U-Net decoder; the
    last map is upsampled to the input's size. While every encoder parameter is frozen the
    encoder stays in eval mode, keeping its BatchNorm statistics (as TransferNet does)."""

    def __init__(self, encoder: nn.Module, skips: list[int], classes: int, dropout: float):
        super().__init__()
        self.encoder = encoder
        self.decoder = Decoder(skips[-2::-1], skips[-1], list(LITE_DECODER[: len(skips) - 1]))
        self.head = nn.Sequential(nn.Dropout2d(dropout), nn.Conv2d(self.decoder.width, classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.encoder(x)
        out = self.head(self.decoder(maps[-1], maps[-2::-1]))
        return F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)

    def train(self, mode: bool = True) -> EncoderUNet:
        super().train(mode)
        if mode and not any(p.requires_grad for p in self.encoder.parameters()):
            self.encoder.eval()
        return self


def unet(
    spec: DataSpec,
    *,
    widths: list[int] = [32, 64, 128, 256],  # noqa: B006  (a config default, never mutated)
    encoder: Literal["scratch", "efficientnet_lite0"] = "scratch",
    pretrained: bool | str = False,
    freeze_backbone: bool = False,
    dropout: Probability = 0.0,
) -> nn.Module:
    """U-Net for segmentation; ``encoder: efficientnet_lite0`` with ``pretrained`` uses ImageNet weights.

    From scratch, ``widths`` are the channels of each level (the last is the bottom); with the
    EfficientNet-Lite0 encoder the decoder's widths are 256, 128, 64, 32 and 16.
    """
    c, _, _ = image_shape(spec, "unet")
    if encoder == "scratch":
        if pretrained:
            from torchkeel.errors import ConfigError

            raise ConfigError("model 'unet': pretrained weights need an encoder: set model.encoder=efficientnet_lite0")
        if len(widths) < 2 or min(widths) < 1:
            from torchkeel.errors import ConfigError

            raise ConfigError("model 'unet': model.widths needs two or more positive widths, e.g. [32, 64, 128, 256]")
        return UNet(c, spec.output_size, list(widths), dropout)
    from torchkeel.models.efficientnet import lite0_encoder

    body = lite0_encoder(pretrained, c)
    if freeze_backbone:
        body.requires_grad_(False)
    return EncoderUNet(body, body.feature_info.channels(), spec.output_size, dropout)


class DictOutput(nn.Module):
    """torchvision's segmentation models return {"out": logits, ...}: the logits alone."""

    def __init__(self, net: nn.Module, weights_note: str | None = None):
        super().__init__()
        self.net, self.weights_note = net, weights_note

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)["out"]


def lraspp_mobilenet_v3(spec: DataSpec, *, pretrained: bool | str = False) -> nn.Module:
    """torchvision LR-ASPP on MobileNetV3-Large (3.2M parameters); ImageNet backbone with ``pretrained``.

    ``pretrained: true`` reads torchvision's MobileNetV3 weights from torch's hub cache
    (downloaded once when online); ``pretrained: PATH`` a local file of them.
    """
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    net = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=spec.output_size)
    return DictOutput(net, _mobilenet_backbone(net, spec, pretrained, "lraspp_mobilenet_v3"))


def deeplabv3_mobilenet_v3(spec: DataSpec, *, pretrained: bool | str = False) -> nn.Module:
    """torchvision DeepLabV3 on MobileNetV3-Large (11M parameters); ImageNet backbone with ``pretrained``.

    ``pretrained`` as for lraspp_mobilenet_v3.
    """
    from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large

    net = deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=spec.output_size)
    return DictOutput(net, _mobilenet_backbone(net, spec, pretrained, "deeplabv3_mobilenet_v3"))


def _mobilenet_backbone(net: nn.Module, spec: DataSpec, pretrained: bool | str, name: str) -> str | None:
    """Load MobileNetV3-Large ImageNet weights into the model's backbone (its ``features``
    layers, named without the prefix) and adapt the first conv to grey images."""
    c, _, _ = image_shape(spec, name)
    note = None
    if pretrained and not on_meta(net):
        if pretrained is True:
            state, source = pretrained_state("mobilenet_v3_large"), "ImageNet (torchvision)"
        else:
            from pathlib import Path

            from torchkeel.weights import import_state_dict

            state, source = import_state_dict(Path(str(pretrained)).expanduser()), str(pretrained)
        state = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
        note = report_loaded(name, net.backbone, state, source, False)
    if c != 3:
        first = net.backbone["0"][0]
        net.backbone["0"][0] = adapt_input_conv(first, c)
    return note
