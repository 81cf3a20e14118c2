"""The engine features the speed work added: simple_cnn's kernels/padding, optimiser kernels,
precision auto, airbench's whitening conv, lookahead EMA, test-time augmentation, and the
fast presets (cifar10_fast on generated CIFAR-10 files; mnist_fast on the real MNIST)."""

from __future__ import annotations

import io
import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from make_data import write_cifar10
from rich.console import Console
from torch import nn

import torchkeel as keel
from torchkeel.config import LookaheadConfig, OptimizerConfig, load_config
from torchkeel.data.bundle import DataSpec
from torchkeel.errors import ConfigError
from torchkeel.evaluate.tta import check_tta, tta_forward
from torchkeel.experiment import load_model
from torchkeel.models import build
from torchkeel.models.airbench import Whitening, airbench
from torchkeel.train import checkpoint as ckpt
from torchkeel.train.lookahead import Lookahead
from torchkeel.train.optim import build_optimizer
from torchkeel.train.runtime import resolve_precision

ROOT = Path(__file__).resolve().parents[1]
MNIST = DataSpec("m", "image", "classification", (1, 28, 28), classes=list("0123456789"))
CIFAR = DataSpec("c", "image", "classification", (3, 32, 32), classes=list("abcdefghij"))


def test_simple_cnn_gives_the_classic_mnist_net_and_keeps_its_default():
    torch.manual_seed(0)
    ours = build(
        {"name": "simple_cnn", "channels": [24, 32], "kernels": [5, 3], "padding": "valid", "hidden": 256}, MNIST
    )
    reference = nn.Sequential(  # conv 24 5x5, pool, conv 32 3x3, pool, fc 256, fc 10 (valid padding)
        nn.Conv2d(1, 24, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(24, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(800, 256), nn.ReLU(), nn.Linear(256, 10),
    )  # fmt: skip
    assert [p.shape for p in ours.parameters()] == [p.shape for p in reference.parameters()]
    with torch.no_grad():
        for a, b in zip(ours.parameters(), reference.parameters(), strict=True):
            b.copy_(a)
    x = torch.randn(3, 1, 28, 28)
    assert torch.allclose(ours(x), reference(x), atol=1e-6)
    default = build("simple_cnn", MNIST)  # 3x3 convs, same padding, as before
    assert [m.kernel_size for m in default.modules() if isinstance(m, nn.Conv2d)] == [(3, 3), (3, 3)]
    assert default(x).shape == (3, 10)


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"kernels": [5]}, "one positive size per conv stage"),
        ({"kernels": [9, 9], "padding": "valid"}, "below one"),
        ({"channels": []}, "at least one conv width"),  # found by the slow fuzz run
    ],
)
def test_simple_cnn_kernels_that_cannot_work_are_refused(options, fragment):
    with pytest.raises(ConfigError, match=fragment):
        build({"name": "simple_cnn", **options}, DataSpec("d", "image", "classification", (1, 8, 8), classes=["a"]))


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
@pytest.mark.parametrize("implementation", ["loop", "foreach", "fused"])
def test_optimizer_implementations_compute_torchs_update(name, implementation):
    def trained(cfg: OptimizerConfig) -> list[torch.Tensor]:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))
        optimizer = build_optimizer(model, cfg)
        for step in range(4):
            x = torch.randn(16, 6, generator=torch.Generator().manual_seed(step))
            optimizer.zero_grad()
            model(x).square().mean().backward()
            optimizer.step()
        return [p.detach() for p in model.parameters()]

    options = {"name": name, "lr": 0.01, "weight_decay": 0.01, "momentum": 0.9}
    reference = trained(OptimizerConfig(**options))  # torch's default kernels
    for a, b in zip(trained(OptimizerConfig(**options, implementation=implementation)), reference, strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_fused_rmsprop_is_refused():
    with pytest.raises(ConfigError, match="no fused RMSprop"):
        build_optimizer(nn.Linear(2, 2), OptimizerConfig(name="rmsprop", implementation="fused"))


def test_precision_auto_takes_bf16_only_where_the_cpu_has_it():
    cpu = torch.device("cpu")
    has_bf16 = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert resolve_precision("auto", cpu) == ("bf16" if has_bf16 else "fp32")
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    run = keel.fit(build("mlp", keel.data.load("digits").spec), keel.data.load("digits"), epochs=1, precision="auto")
    assert run.history[0]["train/loss"] > 0


TRAINING_STEPS = """
import resource, sys, torch
import torch.nn.functional as F
from torch import nn
from torchkeel.train.runtime import set_allocator
applied = set_allocator(sys.argv[1])
torch.manual_seed(0)
model = nn.Sequential(  # workload (1)'s CNN, channels_last
    nn.Conv2d(1, 24, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(24, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
    nn.Flatten(), nn.Linear(800, 256), nn.ReLU(), nn.Linear(256, 10),
).to(memory_format=torch.channels_last)
optimizer = torch.optim.Adam(model.parameters())
x, y = torch.randn(1024, 1, 28, 28), torch.randint(0, 10, (1024,))
def steps(n):
    for i in range(n):
        idx = torch.randint(0, 1024, (128,))
        loss = F.cross_entropy(model(x[idx]), y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
steps(5)  # the first steps fault their pages in under either setting
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
steps(20)
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_allocator_retain_stops_the_page_faults_of_every_training_step():
    def faults(allocator: str) -> tuple[str, int]:
        cmd = [sys.executable, "-c", TRAINING_STEPS, allocator]
        applied, count = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()
        return applied, int(count)

    (applied, retained), (untouched, system) = faults("retain"), faults("system")
    assert (applied, untouched) == ("True", "False")
    # glibc's defaults give the activations' pages back and fault them in again every step
    # (~6,000 faults per step measured); kept for reuse, the steps fault (almost) nothing
    assert system > 20 * 1000
    assert retained < system / 20


def test_whitening_conv_whitens_patches_once():
    torch.manual_seed(0)
    x = torch.randn(400, 3, 12, 12) @ torch.randn(12, 12)  # rows of pixels correlated
    stem = Whitening(3, kernel=2)
    stem.fit_data(x)
    out = F.conv2d(x, stem.conv.weight)[:, :12]  # the 12 eigen-directions (the rest are negatives)
    patches = out.permute(0, 2, 3, 1).reshape(-1, 12)
    covariance = torch.cov(patches.T)
    assert torch.allclose(covariance, torch.eye(12), atol=0.02)
    assert not stem.conv.weight.requires_grad and bool(stem.fitted)
    before = stem.conv.weight.clone()
    stem.fit_data(torch.randn(50, 3, 12, 12))  # fitted once: loaded or resumed weights stay
    assert torch.equal(stem.conv.weight, before)
    fresh = Whitening(3, kernel=2)
    fresh.load_state_dict(stem.state_dict())
    assert bool(fresh.fitted)


def test_airbench_net_shapes_and_frozen_parts():
    model = airbench(CIFAR)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert "0.conv.weight" in frozen and all(n.endswith((".weight", "conv.weight")) for n in frozen)
    assert all(not m.weight.requires_grad and m.eps == 1e-12 for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def test_lookahead_matches_airbenchs_rule():
    def train(use_ours: bool) -> list[torch.Tensor]:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
        optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
        total, every, decay = 23, 5, 0.7
        ours = Lookahead(LookaheadConfig(decay=decay, every=every), optimizer, total)
        slow = None
        for step in range(1, total + 1):
            x = torch.randn(8, 4, generator=torch.Generator().manual_seed(step))
            optimizer.zero_grad()
            model(x).square().mean().backward()
            optimizer.step()
            if use_ours:
                ours.step(step)
            elif step % every == 0:  # airbench94's LookaheadState.update, written out
                with torch.no_grad():
                    if slow is None:
                        slow = [p.detach().clone() for p in model.parameters()]
                    else:
                        for s, p in zip(slow, model.parameters(), strict=True):
                            s.lerp_(p, 1 - decay * (step / total) ** 3)
                            p.copy_(s)
        if use_ours:
            ours.finish()
        else:
            with torch.no_grad():
                for s, p in zip(slow, model.parameters(), strict=True):
                    p.copy_(s)
        return [p.detach() for p in model.parameters()]

    for a, b in zip(train(True), train(False), strict=True):
        assert torch.equal(a, b)


def test_lookahead_resumes_bit_identically(tmp_path):
    data = keel.data.load("digits")
    options = {
        "epochs": 2,
        "seed": 3,
        "lookahead": {"decay": 0.8, "every": 4},
        "checkpoint": {"every_steps": 13, "min_seconds": 3600, "keep": 100},
        "progress": False,
    }
    torch.manual_seed(0)
    full = keel.fit(build("mlp", data.spec), data, run_dir=tmp_path, **options)
    mid = [p for p in ckpt.list_checkpoints(tmp_path / "checkpoint") if ckpt.read_checkpoint(p).state["batch"] > 0]
    assert mid
    torch.manual_seed(99)  # different initial weights: everything must come from the checkpoint
    resumed = keel.fit(build("mlp", data.spec), data, resume=mid[0], **options)
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_tta_averages_mirrored_and_shifted_views():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)).eval()
    x = torch.randn(2, 3, 8, 8)
    mirrored = (model(x) + model(x.flip(-1))) / 2
    assert torch.equal(tta_forward(model, x, "none"), model(x))
    assert torch.allclose(tta_forward(model, x, "flip"), mirrored)
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    views = [padded[..., :8, :8], padded[..., 2:, 2:]]
    shifted = sum((model(v) + model(v.flip(-1))) / 2 for v in views) / 2
    assert torch.allclose(tta_forward(model, x, "flip_translate"), (mirrored + shifted) / 2, atol=1e-6)
    with pytest.raises(ConfigError, match="eval.tta"):
        check_tta("flip", "text")


def test_tta_of_a_map_mirrors_and_shifts_each_view_back():
    """Segmentation: each view's (B, K, H, W) map is moved back to the input's pixels, so a
    model that is the same under mirroring and shifting (a 1x1 conv) is unchanged by TTA."""
    torch.manual_seed(0)
    model = nn.Conv2d(3, 4, 1).eval()
    x = torch.randn(2, 3, 8, 10)
    with torch.no_grad():
        assert torch.allclose(tta_forward(model, x, "flip"), model(x), atol=1e-6)
        both = tta_forward(model, x, "flip_translate")
        torch.testing.assert_close(both[..., 1:-1, 1:-1], model(x)[..., 1:-1, 1:-1], atol=1e-6, rtol=0)
        pointwise = tta_forward(lambda t: t[:, :1].clone(), x, "flip_translate")[:, 0]
        assert torch.allclose(pointwise[:, 1:-1, 1:-1], x[:, 0, 1:-1, 1:-1], atol=1e-6)  # no pixel moved


def test_cifar10_fast_preset_runs_on_generated_cifar10_files(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR10

    from torchkeel.experiment import train

    for attr, value in write_cifar10(tmp_path / "data", per_batch=40, test=60).items():
        monkeypatch.setattr(CIFAR10, attr, value)  # torchvision checks the published files' MD5s
    overrides = [
        f"data.root={tmp_path / 'data'}",
        f"out_dir={tmp_path / 'runs'}",
        "model.widths=[16,32,32]",  # the recipe as written, on a narrower net: seconds on a CPU
        "train.epochs=2",
        "train.batch_size=64",
    ]
    cfg = load_config(ROOT / "configs" / "cifar10_fast.yaml", overrides)
    assert cfg.model.name == "airbench" and cfg.train.lookahead is not None and cfg.eval.tta == "flip_translate"
    run_dir = train(cfg, Console(file=io.StringIO()), progress=False)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert 0.0 <= summary["test"]["accuracy"] <= 1.0 and summary["epochs"] == 2
    model, _, _ = load_model(run_dir)
    assert bool(model[0].fitted)  # the whitening conv was fitted and saved with the weights


@pytest.mark.realdata
@pytest.mark.slow
def test_mnist_fast_preset_reaches_99_percent(tmp_path):
    if not (ROOT / "data" / "MNIST" / "raw").is_dir():
        pytest.skip("real MNIST not under data/")
    from torchkeel.experiment import train

    cfg = load_config(ROOT / "configs" / "mnist_fast.yaml", [f"data.root={ROOT / 'data'}", f"out_dir={tmp_path}"])
    run_dir = train(cfg, Console(file=io.StringIO()), progress=False)
    assert (
        json.loads((run_dir / "summary.json").read_text())["test"]["accuracy"] >= 0.988
    )  # the preset's per-seed floor
