import pytest
import torch
from torch import nn

import torchkeel as keel
from torchkeel.data.bundle import DataBundle, DataSpec, Split
from torchkeel.errors import ConfigError, TrainingError


@pytest.fixture(scope="module")
def digits():
    return keel.data.load("digits")


def _model(spec, seed=0, name="simple_cnn"):
    torch.manual_seed(seed)
    return keel.models.build(name, spec)


def test_fit_learns_digits(digits):
    run = keel.fit(_model(digits.spec), digits, epochs=4, progress=False)
    assert len(run.history) == 4
    assert run.history[-1]["train/loss"] < run.history[0]["train/loss"]
    assert run.evaluate("test")["accuracy"] > 0.93


def test_design_md_example_sgd(digits):
    run = keel.fit(_model(digits.spec), digits, epochs=3, optimizer="sgd", lr=0.05, momentum=0.9, progress=False)
    assert run.config.train.optimizer.name == "sgd" and run.config.train.optimizer.lr == 0.05
    assert run.evaluate("test")["accuracy"] > 0.9


def test_same_seed_gives_bit_identical_weights(digits):
    runs = [
        keel.fit(_model(digits.spec), digits, epochs=2, seed=1, augment={"crop": 1, "flip": True}, progress=False)
        for _ in range(2)
    ]
    for (k, a), (_, b) in zip(runs[0].model.state_dict().items(), runs[1].model.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    other = keel.fit(_model(digits.spec), digits, epochs=2, seed=2, progress=False)
    assert not torch.equal(other.model.state_dict()["0.0.weight"], runs[0].model.state_dict()["0.0.weight"])


def test_any_user_module(digits):
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))

        def forward(self, x):
            return self.net(x)

    run = keel.fit(Tiny(), digits, epochs=3, lr=0.01, progress=False)
    assert run.evaluate("test")["accuracy"] > 0.85


def test_early_stopping_restores_best(digits):
    run = keel.fit(
        _model(digits.spec),
        digits,
        epochs=30,
        lr=0.02,
        schedule="constant",
        early_stopping={"monitor": "val/accuracy", "patience": 2},
        progress=False,
    )
    assert run.stopped_early and len(run.history) < 30
    best = max(r["val/accuracy"] for r in run.history)
    assert run.evaluate("val")["accuracy"] == pytest.approx(best)


def test_early_stopping_monitor_must_be_logged(digits):
    with pytest.raises(ConfigError, match="val/acc"):
        keel.fit(_model(digits.spec), digits, epochs=2, early_stopping={"monitor": "val/acc"}, progress=False)


def test_regularisation_options_run(digits):
    run = keel.fit(
        _model(digits.spec),
        digits,
        epochs=2,
        label_smoothing=0.1,
        grad_clip=1.0,
        weight_decay=0.05,
        optimizer="rmsprop",
        lr=1e-3,
        schedule="cosine",
        metrics=["accuracy", "precision", "recall"],
        progress=False,
    )
    assert {"val/precision", "val/recall"} <= set(run.history[-1])


def test_unknown_fit_option_suggests(digits):
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        keel.fit(_model(digits.spec), digits, epoch=2, progress=False)


def _regression_data(n=512):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 5, generator=g)
    y = (x @ torch.tensor([[1.0], [-2.0], [0.5], [0.0], [3.0]])) + 0.1 * torch.randn(n, 1, generator=g)
    spec = DataSpec("lin", "table", "regression", (5,), targets=1)
    cut = int(n * 0.8)
    return DataBundle(spec, Split(x[:cut], y[:cut]), None, Split(x[cut:], y[cut:]))


def test_mse_regression():
    data = _regression_data()
    torch.manual_seed(0)
    run = keel.fit(
        keel.models.build({"name": "mlp", "hidden": [32]}, data.spec),
        data,
        epochs=30,
        lr=1e-2,
        metrics=["mse", "r2"],
        progress=False,
    )
    result = run.evaluate("test")
    assert run.config.train.loss == "auto" and result["r2"] > 0.95


def test_wrong_loss_for_task():
    data = _regression_data()
    with pytest.raises(ConfigError, match="use 'mse'"):
        keel.fit(keel.models.build("mlp", data.spec), data, loss="cross_entropy", progress=False)


def test_bce_binary():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 2, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).float()
    spec = DataSpec("xor", "table", "binary", (2,), classes=["no", "yes"])
    data = DataBundle(spec, Split(x[:300], y[:300]), None, Split(x[300:], y[300:]))
    torch.manual_seed(0)
    run = keel.fit(keel.models.build({"name": "mlp", "hidden": [16]}, spec), data, epochs=20, lr=1e-2, progress=False)
    assert run.evaluate("test")["accuracy"] > 0.9


def test_nan_loss_stops_with_a_clear_error(digits):
    bad = DataBundle(digits.spec, Split(digits.train.x * float("nan"), digits.train.y), None, digits.test)
    with pytest.raises(TrainingError, match="lower the learning rate"):
        keel.fit(_model(digits.spec), bad, epochs=1, progress=False)
