import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from torchkeel.config import OptimizerConfig, ScheduleConfig
from torchkeel.train.optim import ONECYCLE_START, build_optimizer, lr_factor, param_groups

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1))


def test_weight_decay_skips_biases_and_norms():
    model = _model()
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert {p.ndim for p in decay["params"]} == {2}
    assert {p.ndim for p in no_decay["params"]} == {1}
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_embeddings_and_a_tied_head_are_not_decayed():
    from test_gpt import corpus_spec

    from torchkeel.models import build

    model = build({"name": "gpt", "n_layer": 1, "n_head": 2, "n_embd": 8}, corpus_spec())
    decay, no_decay = param_groups(model, 0.1)
    skipped = {id(p) for p in no_decay["params"]}
    assert id(model.tok.weight) in skipped and id(model.head.weight) in skipped and id(model.pos.weight) in skipped
    assert {id(p) for p in decay["params"]} == {
        id(p)
        for name, p in model.named_parameters()
        if name.startswith("blocks.") and name.endswith("weight") and p.ndim == 2
    }
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))  # tied: once
    # and AdamW leaves an embedding row of a token that never occurs where it was
    opt = build_optimizer(model, OptimizerConfig(name="adamw", lr=0.1, weight_decay=0.5))
    before = model.tok.weight[10].clone()
    x = torch.zeros(2, 16, dtype=torch.long)  # token 0 only; row 10 gets gradient only via the head
    model(x).logsumexp(-1).mean().backward()
    model.tok.weight.grad[10] = 0.0  # isolate decay: no gradient on row 10
    opt.step()
    torch.testing.assert_close(model.tok.weight[10], before)


@pytest.mark.parametrize(
    ("name", "extra", "reference"),
    [
        (
            "sgd",
            {"momentum": 0.9, "nesterov": True},
            lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True),
        ),
        ("adam", {}, lambda p: torch.optim.Adam(p, lr=0.05)),
        ("adamw", {}, lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=0.0)),
        ("rmsprop", {"momentum": 0.5}, lambda p: torch.optim.RMSprop(p, lr=0.05, momentum=0.5)),
    ],
)
def test_optimizers_match_torch_reference(name, extra, reference):
    """Without weight decay our optimiser is exactly torch's: same trajectory."""
    x, y = torch.randn(32, 4), torch.randn(32, 1)
    ours, ref = _model(), _model()
    opt = build_optimizer(ours, OptimizerConfig(name=name, lr=0.05, weight_decay=0.0, **extra))
    ref_opt = reference(ref.parameters())
    for _ in range(5):
        for model, o in ((ours, opt), (ref, ref_opt)):
            o.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            o.step()
    for p, q in zip(ours.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q)


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "rmsprop"])
def test_optimizers_reduce_loss(name):
    model = _model()
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    opt = build_optimizer(model, OptimizerConfig(name=name, lr=0.01))
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def _curve(cfg, total=100, per_epoch=10):
    return [lr_factor(cfg, s, total, per_epoch) for s in range(total)]


def test_constant_and_warmup():
    assert set(_curve(ScheduleConfig(name="constant"))) == {1.0}
    warm = _curve(ScheduleConfig(name="constant", warmup=0.1))
    assert warm[0] == pytest.approx(0.1) and warm[9] == 1.0 and warm[50] == 1.0


def test_step_matches_torch_steplr():
    cfg = ScheduleConfig(name="step", step_size=3, gamma=0.5)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
    for epoch in range(10):
        assert lr_factor(cfg, epoch * 10 + 5, 100, 10) == pytest.approx(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()


def test_cosine_matches_torch_cosine_annealing():
    cfg = ScheduleConfig(name="cosine", final_lr=0.1)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=100, eta_min=0.1)
    for step in range(100):
        assert lr_factor(cfg, step, 100, 10) == pytest.approx(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()


def test_onecycle_shape():
    curve = _curve(ScheduleConfig(name="onecycle"))
    peak = curve.index(max(curve))
    assert curve[0] == pytest.approx(ONECYCLE_START + (1 - ONECYCLE_START) / 25)
    assert peak == 24 and max(curve) == 1.0
    assert all(a >= b for a, b in zip(curve[peak:], curve[peak + 1 :], strict=False))
    assert curve[-1] < 0.01
    assert math.isclose(lr_factor(ScheduleConfig(name="onecycle"), 100, 100, 10), 0.0, abs_tol=1e-12)


def test_optimizers_leave_dynamo_unimported():
    """torch.optim's classes import torch._dynamo (1.1 s) on construction and on the first step;
    ours do not, and their state dict loads into torch's own class (a checkpoint stays torch's)."""
    code = (
        "import sys, torch\n"
        "from torchkeel.config import OptimizerConfig\n"
        "from torchkeel.train.optim import build_optimizer\n"
        "for name in ('sgd', 'adam', 'adamw', 'rmsprop'):\n"
        "    model = torch.nn.Linear(4, 2)\n"
        "    opt = build_optimizer(model, OptimizerConfig(name=name, lr=0.1))\n"
        "    opt.zero_grad(); model(torch.randn(8, 4)).sum().backward(); opt.step()\n"
        "    opt.load_state_dict(opt.state_dict())\n"
        "assert 'torch._dynamo' not in sys.modules, 'an optimizer imported torch._dynamo'\n"
        "assert not any(p.grad is not None and p.grad.requires_grad for p in model.parameters())\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": SRC})


def test_optimizer_state_loads_into_torch_class():
    model = _model()
    opt = build_optimizer(model, OptimizerConfig(name="adamw", lr=0.05))
    nn.functional.mse_loss(model(torch.randn(8, 4)), torch.randn(8, 1)).backward()
    opt.step()
    ref = torch.optim.AdamW(param_groups(model, 0.01), lr=0.05)
    ref.load_state_dict(opt.state_dict())
    assert isinstance(opt, torch.optim.AdamW)
    assert ref.state_dict()["state"][0]["step"] == 1
