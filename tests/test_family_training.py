"""Each image family learns digits, and the MLP learns a real table (breast cancer)."""

import pytest
import torch

import torchkeel as keel
from torchkeel.data.bundle import DataBundle, DataSpec, Split
from torchkeel.data.splits import split_indices

THREADS = 1  # small models on a busy 2-core machine: one thread is 10x faster than two spinning


@pytest.fixture(scope="module")
def digits():
    return keel.data.load("digits")


@pytest.mark.parametrize(
    ("options", "epochs", "lr", "floor"),
    [
        ({"name": "lenet5"}, 12, 3e-3, 0.93),
        ({"name": "lenet5", "activation": "relu", "pool": "max"}, 6, 3e-3, 0.93),
        ({"name": "resnet", "width": 8}, 4, 3e-3, 0.95),
        ({"name": "resnet", "depth": 18, "width": 8}, 4, 3e-3, 0.93),
        ({"name": "vit", "dim": 32, "heads": 2, "layers": 2}, 8, 1e-2, 0.9),
    ],
)
def test_image_models_learn_digits(digits, options, epochs, lr, floor):
    torch.manual_seed(0)
    model = keel.models.build(options, digits.spec)
    run = keel.fit(model, digits, epochs=epochs, lr=lr, threads=THREADS, progress=False)
    assert run.evaluate("test")["accuracy"] > floor


def breast_cancer_bundle(seed: int = 0) -> DataBundle:
    """scikit-learn's 569 tumours x 30 measurements, standardised with train statistics."""
    from sklearn.datasets import load_breast_cancer

    table = load_breast_cancer()
    x = torch.tensor(table.data, dtype=torch.float32)
    y = torch.tensor(table.target, dtype=torch.int64)
    val, test, train = split_indices(table.target, len(x), (0.1, 0.2), seed)
    mean, std = x[train].mean(0), x[train].std(0)
    x = (x - mean) / std
    spec = DataSpec("breast_cancer", "table", "classification", (30,), classes=list(table.target_names))
    return DataBundle(spec, Split(x[train], y[train]), Split(x[val], y[val]), Split(x[test], y[test]))


def test_mlp_learns_breast_cancer():
    data = breast_cancer_bundle()
    torch.manual_seed(0)
    model = keel.models.build({"name": "mlp", "hidden": [64], "dropout": 0.1}, data.spec)
    run = keel.fit(model, data, epochs=20, lr=1e-3, threads=THREADS, progress=False)
    majority = data.test.y.float().mean().item()  # 63% benign: what always answering "benign" scores
    accuracy = run.evaluate("test")["accuracy"]
    assert accuracy > 0.94 and accuracy > max(majority, 1 - majority) + 0.2
