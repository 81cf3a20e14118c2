"""torchvision's ImageNet ResNets with a new head, for transfer learning.

``pretrained: true`` loads torchvision's ImageNet weights (downloaded once into torch's hub
cache; offline, a clear error says where to put the file); ``pretrained: PATH`` a local
safetensors or state-dict file, with what matched reported (``report_loaded``). ``freeze_backbone: true`` trains
only the new head; ``train.finetune`` then unfreezes everything for a few epochs at a lower
learning rate (``torchkeel.train.finetune``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchkeel.data.bundle import DataSpec
from torchkeel.errors import ConfigError
from torchkeel.models.cnn import image_shape
from torchkeel.models.layers import Probability


def resnet18(
    spec: DataSpec, *, pretrained: bool | str = False, freeze_backbone: bool = False, dropout: Probability = 0.0
) -> nn.Module:
    """torchvision ResNet-18 (11M parameters) with a new head; ImageNet weights with ``pretrained``."""
    return torchvision_resnet("resnet18", spec, pretrained, freeze_backbone, dropout)


def resnet34(
    spec: DataSpec, *, pretrained: bool | str = False, freeze_backbone: bool = False, dropout: Probability = 0.0
) -> nn.Module:
    """torchvision ResNet-34 (21M parameters) with a new head; ImageNet weights with ``pretrained``."""
    return torchvision_resnet("resnet34", spec, pretrained, freeze_backbone, dropout)


def resnet50(
    spec: DataSpec, *, pretrained: bool | str = False, freeze_backbone: bool = False, dropout: Probability = 0.0
) -> nn.Module:
    """torchvision ResNet-50 (24M parameters, bottlenecks) with a new head; ImageNet weights with ``pretrained``."""
    return torchvision_resnet("resnet50", spec, pretrained, freeze_backbone, dropout)


class TransferNet(nn.Module):
    """A (pretrained) backbone and a new head.

    While every backbone parameter is frozen the backbone also stays in eval mode in training,
    so its BatchNorm layers keep the statistics of pretraining instead of drifting to the new
    data (what Keras does for a layer with ``trainable = False``).
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, weights_note: str | None = None):
        super().__init__()
        self.backbone, self.head = backbone, head
        self.weights_note = weights_note  # which pretrained tensors were loaded, said by `keel train`

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))  # (B, C, H, W) -> (B, features) -> (B, outputs)

    def train(self, mode: bool = True) -> TransferNet:
        super().train(mode)
        if mode and not any(p.requires_grad for p in self.backbone.parameters()):
            self.backbone.eval()
        return self


def torchvision_resnet(arch: str, spec: DataSpec, pretrained: bool | str, freeze: bool, dropout: float) -> TransferNet:
    import torchvision.models  # here, not at the top: importing torchvision costs ~1.3 s

    c, _, _ = image_shape(spec, arch)
    net = getattr(torchvision.models, arch)(weights=None)
    note = None
    if pretrained is True and not on_meta(net):
        net.load_state_dict(pretrained_state(arch))
    elif pretrained and not on_meta(net):
        from torchkeel.weights import import_state_dict

        state = import_state_dict(Path(str(pretrained)).expanduser())
        note = report_loaded(
            arch, net, {k: v for k, v in state.items() if not k.startswith("fc.")}, str(pretrained), False
        )
    if c != 3:
        net.conv1 = adapt_input_conv(net.conv1, c)
    features = net.fc.in_features  # 512 (18, 34) or 2048 (50)
    net.fc = nn.Identity()
    if freeze:
        net.requires_grad_(False)
    head = nn.Sequential(nn.Dropout(dropout), nn.Linear(features, spec.output_size))
    return TransferNet(net, head, note)


def pretrained_state(arch: str) -> dict[str, Any]:
    """torchvision's default ImageNet weights for ``arch`` from torch's hub cache, downloading
    them the first time. torch.load reads them with ``weights_only=True`` (no code runs)."""
    import torchvision.models

    weights = torchvision.models.get_model_weights(arch).DEFAULT
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except (OSError, RuntimeError) as e:  # URLError is an OSError; a bad file a RuntimeError
        reason = str(getattr(e, "reason", None) or e).splitlines()[0]
        raise ConfigError(
            f"model '{arch}': cannot load the pretrained ImageNet weights ({type(e).__name__}: {reason}); "
            f"they are downloaded once from {weights.url} into {cached}: connect to the network, "
            f"or copy that file there, or set model.pretrained=false"
        ) from None


def adapt_input_conv(conv: nn.Conv2d, channels: int) -> nn.Conv2d:
    """The first conv for ``channels`` inputs instead of RGB, keeping pretrained filters usable:
    grey sums the RGB kernels (a grey image is R = G = B); other counts repeat them and scale
    by 3 / channels (timm's ``adapt_input_conv``)."""
    old = conv.weight.detach()  # (64, 3, 7, 7)
    if channels == 1:
        new_weight = old.sum(dim=1, keepdim=True)
    else:
        repeats = -(-channels // 3)
        new_weight = old.repeat(1, repeats, 1, 1)[:, :channels] * (3 / channels)
    new = copy.deepcopy(conv)  # the same kind of conv: timm's TensorFlow-"same" padding stays
    new.in_channels = channels
    new.weight = nn.Parameter(new_weight)
    return new


def report_loaded(name: str, module: nn.Module, state: dict[str, torch.Tensor], source: str, strict: bool) -> str:
    """Load the tensors of ``state`` whose names and shapes fit ``module``; the rest of the
    module keeps its initialisation. ``strict`` (a package's own weights): every tensor must
    fit. From a file the user names, what matched is reported: the line returned (matched /
    missing / unexpected) is what ``keel train`` prints. Nothing fits: ConfigError. A module
    on the meta device (sized before it is built) reads nothing."""
    if on_meta(module):
        return ""
    from torchkeel.weights import match_keys

    own = module.state_dict()
    state = match_keys(state, own.keys())
    fits = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    missing = sorted(own.keys() - fits.keys())
    unexpected = sorted(state.keys() - fits.keys())
    if not fits or (strict and (missing or unexpected)):
        raise ConfigError(
            f"model '{name}': the weights in {source} do not fit ({len(fits)} of {len(own)} tensors match; "
            f"missing e.g. {', '.join(missing[:3]) or '-'}; unexpected e.g. {', '.join(unexpected[:3]) or '-'})"
        )
    module.load_state_dict(fits, strict=False)
    note = f"{name}: pretrained weights from {source}: {len(fits)} of {len(own)} tensors loaded"
    if missing or unexpected:
        note += f"; missing {len(missing)} (e.g. {', '.join(missing[:3]) or '-'}), unexpected {len(unexpected)}"
        note += f" (e.g. {', '.join(unexpected[:3]) or '-'})"
    return note


def on_meta(module: nn.Module) -> bool:
    """Whether ``module`` is being sized on the meta device (no memory, nothing to load)."""
    return any(p.is_meta for p in module.parameters())
