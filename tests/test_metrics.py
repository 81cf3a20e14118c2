import numpy as np
import pytest
import torch
from sklearn import metrics as sk

from torchkeel.data.bundle import DataSpec
from torchkeel.evaluate.metrics import MetricAccumulator

ALL = ["accuracy", "top_k_accuracy", "precision", "recall", "f1", "mse", "rmse", "mae", "r2"]


def _spec(task, classes=None, targets=1):
    return DataSpec("t", "table", task, (3,), classes=classes, targets=targets)


def _feed(acc, out, y, chunks=4):
    for o, t in zip(out.chunk(chunks), y.chunk(chunks), strict=True):
        acc.update(o, t)
    return acc.compute()


def test_classification_matches_sklearn():
    g = torch.Generator().manual_seed(0)
    out = torch.randn(500, 5, generator=g)
    y = torch.randint(0, 5, (500,), generator=g)
    y[:50] = out[:50].argmax(1)
    got = _feed(MetricAccumulator(_spec("classification", list("abcde")), ALL, torch.device("cpu")), out, y)
    pred = out.argmax(1).numpy()
    assert got["accuracy"] == pytest.approx(sk.accuracy_score(y, pred))
    assert got["precision"] == pytest.approx(sk.precision_score(y, pred, average="macro", zero_division=0))
    assert got["recall"] == pytest.approx(sk.recall_score(y, pred, average="macro", zero_division=0))
    assert got["f1"] == pytest.approx(sk.f1_score(y, pred, average="macro", zero_division=0))
    topk = sk.top_k_accuracy_score(y, out.numpy(), k=3, labels=np.arange(5))
    assert got["top_k_accuracy"] == pytest.approx(topk)
    assert set(got) == {"accuracy", "top_k_accuracy", "precision", "recall", "f1"}


def test_macro_average_skips_absent_labels_like_sklearn():
    out = torch.tensor([[5.0, 0, 0, 0], [0, 5.0, 0, 0], [5.0, 0, 0, 0]])
    y = torch.tensor([0, 1, 1])  # labels 2 and 3 never appear
    got = _feed(MetricAccumulator(_spec("classification", list("abcd")), ["f1"], torch.device("cpu")), out, y, 1)
    assert got["f1"] == pytest.approx(sk.f1_score(y, out.argmax(1), average="macro"))


def test_binary_logit():
    g = torch.Generator().manual_seed(1)
    out = torch.randn(200, 1, generator=g)
    y = (torch.rand(200, generator=g) < 0.4).float()
    got = _feed(MetricAccumulator(_spec("binary", ["no", "yes"]), ALL, torch.device("cpu")), out, y)
    pred = (out.view(-1) > 0).long().numpy()
    assert got["accuracy"] == pytest.approx(sk.accuracy_score(y, pred))
    assert got["f1"] == pytest.approx(sk.f1_score(y, pred, average="macro"))


def test_regression_matches_sklearn():
    g = torch.Generator().manual_seed(2)
    y = torch.randn(300, 2, generator=g)
    out = y + 0.3 * torch.randn(300, 2, generator=g)
    got = _feed(MetricAccumulator(_spec("regression", targets=2), ALL, torch.device("cpu")), out, y)
    assert got["mse"] == pytest.approx(sk.mean_squared_error(y, out))
    assert got["rmse"] == pytest.approx(sk.mean_squared_error(y, out) ** 0.5)
    assert got["mae"] == pytest.approx(sk.mean_absolute_error(y, out))
    assert got["r2"] == pytest.approx(sk.r2_score(y, out))
    assert set(got) == {"mse", "rmse", "mae", "r2"}


def test_loss_is_a_sample_weighted_mean():
    acc = MetricAccumulator(_spec("regression"), ["mse"], torch.device("cpu"))
    acc.update(torch.zeros(1, 1), torch.zeros(1, 1), torch.tensor(1.0))
    acc.update(torch.zeros(3, 1), torch.zeros(3, 1), torch.tensor(5.0))
    assert acc.compute()["loss"] == pytest.approx((1 + 15) / 4)
