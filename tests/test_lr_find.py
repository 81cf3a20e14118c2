"""The learning-rate range test: ramp, smoothing, divergence stop, suggestion, exact restore."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import keel

import torchkeel as keel_api
from torchkeel.config import validate_config
from torchkeel.train.lr_find import LRFindResult, lr_find
from torchkeel.train.optim import build_optimizer


@pytest.fixture(scope="module")
def digits():
    return keel_api.data.load("digits")


def _config(**train):
    return validate_config({"model": {"name": "simple_cnn", "batch_norm": True}, "train": train})


def test_restores_weights_buffers_optimizer_and_rng_exactly(digits):
    cfg = _config(optimizer={"name": "adam", "lr": 1e-3})
    torch.manual_seed(0)
    model = keel_api.models.build(cfg.model, digits.spec)
    optimizer = build_optimizer(model, cfg.train.optimizer)
    for i in range(3):  # give Adam moments and a step count, BatchNorm running statistics
        loss = torch.nn.functional.cross_entropy(model(digits.train.x[i * 32 : (i + 1) * 32]), digits.train.y[:32])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    opt_state = {p: {k: v.clone() for k, v in s.items()} for p, s in optimizer.state_dict()["state"].items()}
    groups = [dict(g) for g in optimizer.state_dict()["param_groups"]]
    rng = torch.get_rng_state()

    result = lr_find(model, digits, cfg, optimizer=optimizer, steps=30, end_lr=1.0)
    assert len(result.lrs) > 5

    assert not model.training  # the mode it had
    for k, v in model.state_dict().items():
        assert torch.equal(v, weights[k]), k
    after = optimizer.state_dict()
    assert after["param_groups"] == groups
    for p, s in after["state"].items():
        for k, v in s.items():
            assert torch.equal(v, opt_state[p][k]), (p, k)
    assert torch.equal(torch.get_rng_state(), rng)


def test_ramp_is_exponential_and_stops_on_divergence(digits):
    cfg = _config(optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.9})
    torch.manual_seed(0)
    model = keel_api.models.build(cfg.model, digits.spec)
    result = lr_find(model, digits, cfg, start_lr=1e-5, end_lr=1e4, steps=80)
    assert result.diverged and len(result.lrs) < 80  # SGD at lr 1e4 blows up long before the end
    ratios = [b / a for a, b in zip(result.lrs, result.lrs[1:], strict=False)]
    assert max(ratios) == pytest.approx(min(ratios)) and ratios[0] == pytest.approx((1e4 / 1e-5) ** (1 / 79))
    # bias-corrected exponential moving average of the batch losses
    avg = 0.0
    for i, loss in enumerate(result.losses):
        avg = 0.98 * avg + 0.02 * loss
        assert result.smoothed[i] == pytest.approx(avg / (1 - 0.98 ** (i + 1)))
    assert result.suggestion == pytest.approx(result.lrs[result.smoothed.index(min(result.smoothed))] / 10)
    assert result.steepest_lr <= result.min_loss_lr


def test_suggestion_rule_on_a_known_curve():
    lrs = [10 ** (-6 + i * 0.25) for i in range(25)]
    smoothed = [2.3 - 2.0 * math.exp(-((math.log10(lr) + 1.5) ** 2)) for lr in lrs]  # minimum at lr 10^-1.5
    result = LRFindResult(lrs, smoothed, smoothed)
    assert result.min_loss_lr == pytest.approx(10**-1.5)
    assert result.suggestion == pytest.approx(10**-2.5)
    assert result.steepest_lr < result.min_loss_lr


def test_lr_find_cli(tmp_path: Path):
    proc = keel("lr-find", "--steps", "25", "--plot", "lr.png", "--json", cwd=tmp_path, check=True)
    result = json.loads(proc.stdout)
    assert result["suggestion"] == pytest.approx(result["min_loss_lr"] / 10)
    assert (tmp_path / "lr.png").read_bytes()[:4] == b"\x89PNG"
    saved = json.loads((tmp_path / "lr.json").read_text())
    assert len(saved["lrs"]) == saved["steps"] == len(saved["smoothed"])
    assert not (tmp_path / "runs").exists()  # nothing is trained for real
