"""Saliency, Grad-CAM and integrated gradients find where the answer is; `keel explain`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_one_line_error, keel
from PIL import Image

import torchkeel as keel_api
from torchkeel.data.bundle import DataBundle, DataSpec, Split
from torchkeel.evaluate.explain import grad_cam, integrated_gradients, predicted, saliency


def _corner_task(n: int = 600, size: int = 16, seed: int = 0) -> DataBundle:
    """Noise images whose class is the sign of a 4x4 patch in the top-left corner: the only
    place that holds the answer."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, size, size, generator=g)
    y = torch.randint(0, 2, (n,), generator=g)
    x[:, :, :4, :4] += (2.0 * y - 1.0).view(-1, 1, 1, 1) * 1.5
    spec = DataSpec("corner", "image", "classification", (1, size, size), classes=["minus", "plus"])
    cut = int(0.8 * n)
    return DataBundle(spec, Split(x[:cut], y[:cut]), None, Split(x[cut:], y[cut:]))


@pytest.fixture(scope="module")
def corner_model():
    data = _corner_task()
    torch.manual_seed(0)
    model = keel_api.models.build({"name": "simple_cnn", "channels": [8, 16], "hidden": 32}, data.spec)
    run = keel_api.fit(model, data, epochs=8, lr=3e-3, progress=False)
    assert run.evaluate("test")["accuracy"] > 0.9
    return run.model.eval(), data


def _quadrants(maps: torch.Tensor) -> torch.Tensor:
    """Mean attribution per quadrant (top-left first) of (N, 16, 16) maps, over the batch."""
    return torch.stack([maps[:, :8, :8], maps[:, :8, 8:], maps[:, 8:, :8], maps[:, 8:, 8:]]).mean((1, 2, 3))


def _peak_in_corner(maps: torch.Tensor) -> float:
    peak = maps.flatten(1).argmax(1)
    return float(((peak // 16 < 6) & (peak % 16 < 6)).float().mean())


def test_grad_cam_and_saliency_highlight_the_informative_corner(corner_model):
    model, data = corner_model
    x = data.test.x[:32]
    cls, _ = predicted(model, x, data.spec)
    cam = grad_cam(model, x, cls, data.spec)
    sal = saliency(model, x, cls, data.spec)
    assert cam.shape == (32, 16, 16) and sal.shape == (32, 16, 16)  # the input's spatial shape
    assert float(cam.min()) >= 0 and float(cam.max()) <= 1
    # Grad-CAM works at the last conv's 8x8 grid, upsampled: coarser than saliency
    for maps, factor in ((cam, 1.8), (sal, 3.0)):
        q = _quadrants(maps)
        assert q[0] > factor * q[1:].max(), q
        assert _peak_in_corner(maps) >= 0.9


def test_grad_cam_matches_a_hand_computed_reference(corner_model):
    """Grad-CAM by definition: channel weights = mean gradient of the class score over the
    last conv's output, ReLU of the weighted sum, bilinear upsampling; torch autograd only."""
    model, data = corner_model
    x = data.test.x[:4]
    cls, _ = predicted(model, x, data.spec)
    conv = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    saved = {}
    handle = conv.register_forward_hook(lambda m, i, o: saved.update(out=o))
    scores = model(x).gather(1, cls.view(-1, 1)).sum()
    handle.remove()
    grads = torch.autograd.grad(scores, saved["out"])[0]  # (N, C, h, w)
    cam = (grads.mean((2, 3), keepdim=True) * saved["out"]).sum(1, keepdim=True).clamp_min(0)
    cam = torch.nn.functional.interpolate(cam, size=(16, 16), mode="bilinear", align_corners=False)[:, 0]
    cam = cam / cam.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
    torch.testing.assert_close(grad_cam(model, x, cls, data.spec), cam.detach(), atol=1e-5, rtol=1e-4)


def test_saliency_and_grad_cam_equal_captums(corner_model):
    """The maps are computed in torch alone (no captum import for an image report); captum's
    Saliency and LayerGradCam + bilinear interpolate are the reference."""
    from captum.attr import LayerAttribution, LayerGradCam, Saliency

    model, data = corner_model
    x = data.test.x[:8]
    cls, _ = predicted(model, x, data.spec)
    sal = Saliency(model).attribute(x.clone().requires_grad_(True), target=cls, abs=True).amax(1)
    sal = sal / sal.flatten(1).amax(1).view(-1, 1, 1)
    torch.testing.assert_close(saliency(model, x, cls, data.spec), sal.detach(), atol=1e-6, rtol=1e-5)
    conv = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    cam = LayerGradCam(model, conv).attribute(x, target=cls, relu_attributions=True)
    cam = LayerAttribution.interpolate(cam.detach(), (16, 16), interpolate_mode="bilinear")[:, 0]
    cam = cam / cam.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)
    torch.testing.assert_close(grad_cam(model, x, cls, data.spec), cam, atol=1e-5, rtol=1e-4)


def test_integrated_gradients_find_the_features_that_matter():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(800, 6, generator=g)
    y = (2 * x[:, 1] - 3 * x[:, 4] > 0).long()  # only features 1 and 4 decide the class
    spec = DataSpec("lin", "table", "classification", (6,), classes=["a", "b"])
    data = DataBundle(spec, Split(x[:600], y[:600]), None, Split(x[600:], y[600:]))
    torch.manual_seed(0)
    run = keel_api.fit(keel_api.models.build({"name": "mlp", "hidden": [16]}, spec), data, epochs=15, progress=False)
    cls, _ = predicted(run.model, data.test.x, spec)
    attr = integrated_gradients(run.model, data.test.x, cls, spec).abs().mean(0)
    assert set(attr.argsort(descending=True)[:2].tolist()) == {1, 4}
    # completeness: attributions sum to score(x) - score(baseline)
    x0 = data.test.x[:8]
    total = integrated_gradients(run.model, x0, cls[:8], spec, steps=64).sum(1)
    with torch.no_grad():
        target = cls[:8].view(-1, 1)
        diff = (run.model(x0).gather(1, target) - run.model(torch.zeros_like(x0)).gather(1, target))[:, 0]
    torch.testing.assert_close(total, diff, atol=2e-2, rtol=2e-2)


def _digit_png(folder: Path, index: int) -> Path:
    from sklearn.datasets import load_digits

    digits = load_digits()
    path = folder / f"digit{index}.png"
    pixels = (digits.images[index] / 16.0 * 255).astype(np.uint8)
    Image.fromarray(pixels, mode="L").resize((48, 48), Image.Resampling.NEAREST).save(path)
    return path


def test_keel_explain_writes_images(trained_run: Path, tmp_path: Path):
    files = [_digit_png(tmp_path, i) for i in (0, 7)]
    out = tmp_path / "why"
    proc = keel("explain", str(trained_run), *map(str, files), "--out", str(out), cwd=tmp_path, check=True)
    assert proc.stdout.count("predicted") == 2
    for f in files:
        written = out / f"{f.stem}.explain.png"
        with Image.open(written) as img:
            assert img.format == "PNG" and img.width > img.height  # input | saliency | Grad-CAM in a row
    assert_one_line_error(keel("explain", str(trained_run), str(tmp_path / "none.png"), cwd=tmp_path), "no such file")


def test_grad_cam_and_saliency_of_a_frozen_backbone():
    """A transfer model whose backbone is frozen still has input gradients and Grad-CAM maps."""
    from torchkeel.data.bundle import DataSpec
    from torchkeel.evaluate.explain import grad_cam, saliency
    from torchkeel.models import build

    spec = DataSpec("c", "image", "classification", (3, 32, 32), classes=list("abc"))
    model = build({"name": "resnet18", "freeze_backbone": True}, spec).eval()
    x, target = torch.randn(2, 3, 32, 32), torch.tensor([0, 2])
    for maps in (saliency(model, x, target, spec), grad_cam(model, x, target, spec)):
        assert maps.shape == (2, 32, 32) and torch.isfinite(maps).all() and maps.amax() > 0
