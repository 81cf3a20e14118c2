import numpy as np
import torch

from torchkeel.config import DataConfig
from torchkeel.data import load
from torchkeel.data.splits import split_indices


def test_split_is_seeded_stratified_and_disjoint():
    labels = np.repeat(np.arange(4), [100, 50, 30, 20])
    a = split_indices(labels, 200, (0.1, 0.2), seed=3)
    b = split_indices(labels, 200, (0.1, 0.2), seed=3)
    assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))
    assert sorted(np.concatenate(a).tolist()) == list(range(200))
    val, test, train = a
    for part, fraction in ((val, 0.1), (test, 0.2)):
        counts = np.bincount(labels[part], minlength=4)
        np.testing.assert_allclose(counts, np.array([100, 50, 30, 20]) * fraction, atol=1)
    assert len(train) == 140
    c = split_indices(labels, 200, (0.1, 0.2), seed=4)
    assert not np.array_equal(a[0], c[0])


def test_digits_bundle():
    data = load("digits")
    spec = data.spec
    assert spec.input_shape == (1, 8, 8) and spec.num_classes == 10 and spec.kind == "image"
    assert len(data.train) + len(data.val) + len(data.test) == 1797
    assert abs(len(data.test) - 0.2 * 1797) < 10 and abs(len(data.val) - 0.1 * 1797) < 10
    assert data.train.x.dtype == torch.float32 and data.train.y.dtype == torch.int64
    # normalised with the train split's own statistics: train is exactly standardised
    assert abs(data.train.x.mean().item()) < 1e-4 and abs(data.train.x.std().item() - 1) < 1e-3
    assert abs(data.test.x.mean().item()) > 1e-4  # other splits use train's numbers, not their own


def test_statistics_come_from_train_only():
    data = load(DataConfig(name="digits"), seed=0)
    other = load(DataConfig(name="digits", val_fraction=0.3), seed=0)
    assert data.spec.mean != other.spec.mean  # a different train split gives different stats
    raw = data.train.x * data.spec.std[0] + data.spec.mean[0]
    assert abs(raw.mean().item() - data.spec.mean[0]) < 1e-5


def test_split_depends_on_seed():
    a, b = load("digits", seed=0), load("digits", seed=1)
    assert not torch.equal(a.test.y, b.test.y)
    assert torch.equal(a.test.y, load("digits", seed=0).test.y)


def test_digits_fast_path_equals_sklearn_loader():
    from sklearn.datasets import load_digits

    from torchkeel.data.images import _read_digits

    pixels, target = _read_digits()
    reference = load_digits()
    np.testing.assert_array_equal(pixels, reference.data.astype(np.float32))
    np.testing.assert_array_equal(target, reference.target)
