"""image_folder: PNG/JPEG/BMP class folders, a corrupt file and a stray text file, own
train/val/test folders, sizes and channels, and streaming from disk with DataLoader workers."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from make_data import write_image_folder
from PIL import Image

from torchkeel.config import DataConfig
from torchkeel.data import load
from torchkeel.data.loader import TensorLoader
from torchkeel.data.stream import StreamLoader, StreamSplit, make_loader
from torchkeel.errors import DataError, DataWarning


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("images")
    write_image_folder(root, per_class=12)
    (root / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png")
    (root / "green" / "truncated.jpg").write_bytes((root / "green" / "1.jpg").read_bytes()[:40])
    (root / "blue" / "notes.txt").write_text("not an image")
    return root


def _cfg(root: Path, **image) -> DataConfig:
    return DataConfig(name="image_folder", root=str(root), val_fraction=0.2, test_fraction=0.2, image=image)


def test_loads_decodes_and_counts_bad_files(folder: Path):
    with pytest.warns(DataWarning, match="skipped 3 of 39 files"):
        data = load(_cfg(folder), seed=0)
    spec = data.spec
    assert spec.classes == ["blue", "green", "red"] and spec.input_shape == (3, 20, 24)
    assert sum(len(s) for s in data.splits().values()) == 36
    for split in data.splits().values():  # stratified: every class in every split
        assert torch.bincount(split.y, minlength=3).min() > 0
    assert data.train.x.dtype == torch.float32 and data.train.y.dtype == torch.int64
    # each class is the colour channel that is bright: check the decoded pixels kept their meaning
    raw = data.train.x * torch.tensor(spec.std).view(1, 3, 1, 1) + torch.tensor(spec.mean).view(1, 3, 1, 1)
    assert torch.equal(raw.mean((2, 3)).argmax(1), data.train.y)
    assert abs(data.train.x.mean().item()) < 1e-3  # normalised with train statistics
    assert spec.extra["flip"] is True and spec.extra["resize"] == "crop"


def test_statistics_come_from_the_train_split_only(folder: Path):
    with pytest.warns(DataWarning):
        data = load(_cfg(folder), seed=0)
        other = load(_cfg(folder), seed=1)
    assert data.spec.mean != other.spec.mean
    mean, std = torch.tensor(data.spec.mean).view(1, 3, 1, 1), torch.tensor(data.spec.std).view(1, 3, 1, 1)
    raw = data.train.x.double() * std + mean  # back to [0, 1]
    np.testing.assert_allclose(raw.mean((0, 2, 3)), data.spec.mean, atol=1e-6)
    np.testing.assert_allclose(raw.transpose(0, 1).reshape(3, -1).std(1), data.spec.std, rtol=1e-5)


def test_size_crop_grey_and_mixed_sizes(tmp_path: Path):
    write_image_folder(tmp_path, per_class=6, size=(20, 24))
    Image.new("RGB", (40, 30), (0, 0, 255)).save(tmp_path / "blue" / "big.png")
    with pytest.raises(DataError, match="differ in size.*data.image.size"):
        load(_cfg(tmp_path), seed=0)
    data = load(_cfg(tmp_path, size=[16, 16], channels="grey"), seed=0)
    assert data.spec.input_shape == (1, 16, 16) and data.train.x.shape[1:] == (1, 16, 16)
    stretched = load(_cfg(tmp_path, size=16, resize="stretch"), seed=0)
    assert stretched.spec.input_shape == (3, 16, 16) and stretched.spec.extra["resize"] == "stretch"


def test_all_grey_files_give_one_channel(tmp_path: Path):
    write_image_folder(tmp_path, per_class=6, grey=True)
    assert load(_cfg(tmp_path), seed=0).spec.input_shape == (1, 20, 24)


def test_own_train_val_test_folders_are_kept(tmp_path: Path):
    for part, n in (("train", 9), ("val", 3), ("test", 6)):
        write_image_folder(tmp_path / part, per_class=n)
    data = load(_cfg(tmp_path), seed=0)
    assert (len(data.train), len(data.val), len(data.test)) == (27, 9, 18)
    only_train_test = tmp_path / "tt"
    shutil.copytree(tmp_path / "train", only_train_test / "train")
    shutil.copytree(tmp_path / "test", only_train_test / "test")
    data = load(_cfg(only_train_test), seed=0)
    assert len(data.test) == 18 and len(data.train) + len(data.val) == 27 and len(data.val) == 6  # val from train


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("nothing", "no class folders"),
        ("val-only", "no train/ folder"),
        ("unknown-class", "not among the train/ classes"),
        ("one-class", "classification needs 2"),
    ],
)
def test_bad_folders_are_one_clear_error(tmp_path: Path, layout: str, message: str):
    if layout == "val-only":
        write_image_folder(tmp_path / "val", per_class=3)
    elif layout == "unknown-class":
        write_image_folder(tmp_path / "train", per_class=3)
        write_image_folder(tmp_path / "test" / "x", per_class=1)
        (tmp_path / "test" / "x").rename(tmp_path / "test" / "purple")
    elif layout == "one-class":
        write_image_folder(tmp_path, per_class=4)
        shutil.rmtree(tmp_path / "red")
        shutil.rmtree(tmp_path / "green")
    with pytest.raises(DataError, match=message):
        load(_cfg(tmp_path), seed=0)


def test_streaming_gives_the_same_data_as_memory(folder: Path):
    with pytest.warns(DataWarning):
        memory = load(_cfg(folder, workers=0), seed=0)
        stream = load(_cfg(folder, workers=2, memory_mb=0.001), seed=0)
    assert isinstance(stream.train, StreamSplit) and not isinstance(memory.train, StreamSplit)
    np.testing.assert_allclose(stream.spec.mean, memory.spec.mean, atol=1e-6)
    for name in ("train", "val", "test"):
        lazy, held = getattr(stream, name), getattr(memory, name)
        assert torch.equal(lazy.y, held.y)
        torch.testing.assert_close(lazy.x[:], held.x, atol=1e-5, rtol=0)
        torch.testing.assert_close(lazy.x[3:7], held.x[3:7], atol=1e-5, rtol=0)
    # the training loaders give the same batches in the same seeded order
    streamed = make_loader(stream.train, "cpu", 8, seed=3)
    tensors = make_loader(memory.train, "cpu", 8, seed=3)
    assert isinstance(streamed, StreamLoader) and isinstance(tensors, TensorLoader)
    assert len(streamed) == len(tensors)
    for (xs, ys), (xt, yt) in zip(streamed.epoch(1, start=1), tensors.epoch(1, start=1), strict=True):
        assert torch.equal(ys, yt)
        torch.testing.assert_close(xs, xt, atol=1e-5, rtol=0)


def test_a_file_that_breaks_after_loading_never_stops_a_run(tmp_path: Path):
    write_image_folder(tmp_path, per_class=6)
    data = load(_cfg(tmp_path, workers=0, memory_mb=0.001), seed=0)
    Path(data.train.files.paths[0]).write_bytes(b"gone")
    with pytest.warns(DataWarning, match="can no longer be decoded.*left out of its batch"):
        batches = list(make_loader(data.train, "cpu", 4, shuffle=False).epoch(0))
    assert batches[0][0].shape[0] == 3 and sum(len(y) for _, y in batches) == len(data.train) - 1
    with pytest.warns(DataWarning, match="replaced by the mean image"):
        x = data.train.x[0:4]
    assert x.shape[0] == 4 and x[0].abs().max() == 0


def test_fit_trains_on_a_streamed_folder_as_on_tensors(folder: Path):
    import torchkeel as keel

    with pytest.warns(DataWarning):
        memory = load(_cfg(folder, workers=0), seed=0)
        stream = load(_cfg(folder, workers=1, memory_mb=0.001), seed=0)
    weights = []
    for data in (memory, stream):
        torch.manual_seed(0)
        model = keel.models.build({"name": "simple_cnn", "channels": [8], "hidden": 16}, data.spec)
        run = keel.fit(model, data, epochs=2, batch_size=8, augment={"crop": 1}, progress=False)
        weights.append(run.model.state_dict())
        assert run.evaluate("test")["accuracy"] >= 0.0 and len(run.history) == 2
    for key, value in weights[0].items():
        torch.testing.assert_close(weights[1][key], value, atol=1e-5, rtol=1e-4)
