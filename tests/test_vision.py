"""The torchvision sets read from files written here in their real formats (IDX, CIFAR's
python batches, SVHN's .mat), and the real MNIST when it is beside the project."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from make_data import digit_images, write_cifar10, write_cifar100, write_idx, write_mnist_family, write_svhn

from torchkeel.config import DataConfig
from torchkeel.data import load
from torchkeel.errors import DataError

REAL_MNIST = Path(__file__).resolve().parents[1] / "data"  # a local copy or link, never committed


@pytest.mark.parametrize(
    ("name", "folder"), [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST"), ("kmnist", "KMNIST")]
)
def test_mnist_family_from_idx_files(tmp_path: Path, name: str, folder: str):
    write_mnist_family(tmp_path, folder, train=300, test=100)
    data = load(DataConfig(name=name, root=str(tmp_path), val_fraction=0.1), seed=0)
    spec = data.spec
    assert spec.input_shape == (1, 28, 28) and spec.num_classes == 10 and spec.kind == "image"
    assert (len(data.train), len(data.val), len(data.test)) == (270, 30, 100)  # own test split kept
    assert data.train.x.dtype == torch.float32 and data.train.y.dtype == torch.int64
    # the test split holds exactly the t10k files' labels, in order
    _, test_labels = digit_images(100, seed=1)
    assert torch.equal(data.test.y, torch.from_numpy(test_labels.astype(np.int64)))
    # normalised with the train split's own statistics
    assert abs(data.train.x.mean().item()) < 1e-4 and abs(data.train.x.std().item() - 1) < 1e-3
    assert spec.extra["flip"] is (name == "fashion_mnist") and spec.extra["background"] == "dark"


def test_idx_files_read_as_torchvision_reads_them_without_importing_it(tmp_path: Path):
    import subprocess
    import sys

    write_mnist_family(tmp_path, "FashionMNIST", train=50, test=20)
    script = (
        "import sys; from torchkeel.config import DataConfig; from torchkeel.data import load; "
        f"d = load(DataConfig(name='fashion_mnist', root={str(tmp_path)!r}, val_fraction=0.0), seed=0); "
        "print(len(d.train), 'torchvision' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["50", "False"]  # importing torchvision costs ~1.3 s of a fast run
    from torchvision.datasets import FashionMNIST  # the reference reader

    ours = load(DataConfig(name="fashion_mnist", root=str(tmp_path), val_fraction=0.0), seed=0)
    theirs = FashionMNIST(str(tmp_path), train=False)
    assert torch.equal(ours.test.y, theirs.targets) and ours.spec.classes == theirs.classes
    pixels = ours.test.x[:, 0] * ours.spec.std[0] + ours.spec.mean[0]
    assert torch.allclose(pixels * 255, theirs.data.float(), atol=1e-3)


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        (lambda b: b[:-5], "truncated or not this file"),
        (lambda b: b[:6], "truncated IDX header"),
        (lambda b: b"\x00\x00\x0d" + b[3:], "bad header"),  # 0x0d: float values, not unsigned bytes
        (lambda b: b"", "bad header"),
    ],
)
def test_damaged_idx_files_are_one_error_naming_the_file(tmp_path: Path, damage, fragment):
    write_mnist_family(tmp_path, "MNIST", train=40, test=10)
    path = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataError, match=fragment) as e:
        load(DataConfig(name="mnist", root=str(tmp_path)), seed=0)
    assert str(path) in str(e.value)


def test_idx_images_and_labels_that_disagree_in_count_are_refused(tmp_path: Path):
    write_mnist_family(tmp_path, "MNIST", train=40, test=10)
    labels = tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    write_idx(labels, np.zeros(9, dtype=np.uint8))
    with pytest.raises(DataError, match="10 images in t10k-images-idx3-ubyte but 9 labels"):
        load(DataConfig(name="mnist", root=str(tmp_path)), seed=0)


def test_train_statistics_exclude_val_and_test(tmp_path: Path):
    write_mnist_family(tmp_path, "MNIST", train=300, test=100)
    cfg = DataConfig(name="mnist", root=str(tmp_path))
    data = load(cfg, seed=0)
    raw = data.train.x.double() * data.spec.std[0] + data.spec.mean[0]
    assert raw.mean().item() == pytest.approx(data.spec.mean[0], abs=1e-6)
    assert raw.std().item() == pytest.approx(data.spec.std[0], rel=1e-5)
    everything = torch.cat([data.train.x, data.val.x]).double() * data.spec.std[0] + data.spec.mean[0]
    assert everything.mean().item() != pytest.approx(data.spec.mean[0], abs=1e-7)


def test_resize_and_channels_of_a_named_set(tmp_path: Path):
    write_mnist_family(tmp_path, "MNIST", train=120, test=40)
    data = load(DataConfig(name="mnist", root=str(tmp_path), image={"size": 32, "channels": "rgb"}), seed=0)
    assert data.spec.input_shape == (3, 32, 32) and data.spec.extra["resize"] == "crop"
    assert torch.allclose(data.train.x[:, 0], data.train.x[:, 2])  # grey copied to three channels


def test_missing_files_name_where_they_were_expected(tmp_path: Path):
    with pytest.raises(DataError) as e:
        load(DataConfig(name="mnist", root=str(tmp_path)), seed=0)
    message = str(e.value)
    assert str(tmp_path / "MNIST" / "raw") in message and "train-images-idx3-ubyte" in message
    assert "data.download: true" in message


def _patch_checksums(monkeypatch, cls, lists: dict) -> None:
    # torchvision checks the published MD5s of CIFAR/SVHN files before reading them; the files
    # written here are not the published ones, so the class is told their MD5s instead
    for attr, value in lists.items():
        monkeypatch.setattr(cls, attr, value)


def test_cifar10_python_batches(tmp_path: Path, monkeypatch):
    from torchvision.datasets import CIFAR10

    _patch_checksums(monkeypatch, CIFAR10, write_cifar10(tmp_path, per_batch=40, test=60))
    data = load(DataConfig(name="cifar10", root=str(tmp_path), val_fraction=0.1), seed=0)
    assert data.spec.input_shape == (3, 32, 32) and data.spec.classes[0] == "airplane"
    assert len(data.train) + len(data.val) == 200 and abs(len(data.val) - 20) <= 3 and len(data.test) == 60
    assert data.spec.extra["flip"] is True and len(data.spec.mean) == 3


def test_cifar_files_that_fail_their_checksums_are_refused(tmp_path: Path):
    write_cifar10(tmp_path)  # not the published files, and the class is not told otherwise
    with pytest.raises(DataError, match="checksums"):
        load(DataConfig(name="cifar10", root=str(tmp_path)), seed=0)


def test_cifar100_and_svhn(tmp_path: Path, monkeypatch):
    from torchvision.datasets import CIFAR100, SVHN

    _patch_checksums(monkeypatch, CIFAR100, write_cifar100(tmp_path / "c100"))
    data = load(DataConfig(name="cifar100", root=str(tmp_path / "c100")), seed=0)
    assert data.spec.num_classes == 100 and len(data.test) == 100
    monkeypatch.setattr(SVHN, "split_list", {**SVHN.split_list, **write_svhn(tmp_path / "svhn")})
    svhn = load(DataConfig(name="svhn", root=str(tmp_path / "svhn")), seed=0)
    assert svhn.spec.input_shape == (3, 32, 32) and svhn.spec.classes == [str(d) for d in range(10)]
    assert int(svhn.test.y.max()) <= 9 and svhn.spec.extra["flip"] is False  # label 10 is digit 0


@pytest.mark.realdata
@pytest.mark.skipif(not (REAL_MNIST / "MNIST" / "raw").is_dir(), reason="the real MNIST is not in data/MNIST/raw")
def test_real_mnist():
    data = load(DataConfig(name="mnist", root=str(REAL_MNIST), val_fraction=0.0), seed=0)
    assert (len(data.train), len(data.test)) == (60_000, 10_000) and data.val is None
    # the classic MNIST normalisation constants (0.1307, 0.3081) are these train statistics
    assert data.spec.mean[0] == pytest.approx(0.1307, abs=1e-4) and data.spec.std[0] == pytest.approx(0.3081, abs=1e-4)
    assert torch.bincount(data.test.y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
