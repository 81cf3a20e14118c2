"""The torchvision data sets: MNIST, Fashion-MNIST, KMNIST, CIFAR-10, CIFAR-100 and SVHN.

Files are read from ``data.root`` in torchvision's layout (e.g.
``ROOT/MNIST/raw/train-images-idx3-ubyte``): the MNIST family's IDX files by
``torchkeel.data.idx`` (no torchvision import), the others by ``torchvision.datasets``.
Nothing is downloaded unless ``data.download`` is true (torchvision downloads). Each set
keeps its own test split; val comes out of train (stratified, seeded).

CIFAR's "python version" batches are pickles by format. They are only ever read through
torchvision's CIFAR classes, which check every file against its published MD5 before
unpickling it, so a file that is not the published one is refused rather than unpickled.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from torchkeel.config_data import DataConfig
from torchkeel.data.bundle import DataBundle
from torchkeel.data.idx import FILES as IDX_FILES
from torchkeel.data.idx import read_split
from torchkeel.data.images import image_bundle
from torchkeel.data.resize import fit_images
from torchkeel.errors import DataError

DEFAULT_ROOT = "~/.cache/torchkeel"
DIGITS = [str(d) for d in range(10)]
# torchvision's class names of the two other IDX sets (FashionMNIST.classes, KMNIST.classes)
FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
KUZUSHIJI = ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"]
IDX_SETS = ("MNIST", "FashionMNIST", "KMNIST")  # read by torchkeel.data.idx when their files are there


@dataclass(frozen=True)
class VisionSet:
    cls: str  # the torchvision.datasets class
    flip: bool  # is a mirrored sample still the same class? (no for digits and characters)
    background: str | None = None  # "dark": light ink on a dark background (predict inverts the opposite)
    classes: list[str] | None = None  # our names, where torchvision's are awkward ("0 - zero")


VISION_SETS = {
    "mnist": VisionSet("MNIST", flip=False, background="dark", classes=DIGITS),
    "fashion_mnist": VisionSet("FashionMNIST", flip=True, background="dark", classes=FASHION),
    "kmnist": VisionSet("KMNIST", flip=False, background="dark", classes=KUZUSHIJI),
    "cifar10": VisionSet("CIFAR10", flip=True),
    "cifar100": VisionSet("CIFAR100", flip=True),
    "svhn": VisionSet("SVHN", flip=False, classes=DIGITS),
}


def load_vision(cfg: DataConfig, seed: int) -> DataBundle:
    """One of VISION_SETS as a DataBundle: uint8 pixels -> optional resize/channels -> split
    -> per-channel normalisation with train statistics."""
    info = VISION_SETS[cfg.name]
    root = Path(os.path.expanduser(cfg.root or DEFAULT_ROOT))
    if _idx_files_present(info, root):  # the MNIST family, read without torchvision
        (train_x, train_y), (test_x, test_y) = (_read_idx(info, root, train) for train in (True, False))
        classes = info.classes
    else:
        dataset_cls = _torchvision_class(info.cls)
        if not cfg.download:
            _check_files(cfg.name, dataset_cls, root)
        train_x, train_y, classes = _read(cfg, dataset_cls, root, train=True)
        test_x, test_y, _ = _read(cfg, dataset_cls, root, train=False)
    train_x, test_x = fit_images(train_x, cfg.image), fit_images(test_x, cfg.image)
    bundle = image_bundle(cfg.name, train_x, train_y, info.classes or classes, cfg, seed, test=(test_x, test_y))
    bundle.spec.extra["flip"] = info.flip
    if info.background:
        bundle.spec.extra["background"] = info.background
    if cfg.image.size is not None:
        bundle.spec.extra["resize"] = cfg.image.resize
    return bundle


def _idx_files_present(info: VisionSet, root: Path) -> bool:
    return info.cls in IDX_SETS and all((root / info.cls / "raw" / f).is_file() for f in sum(IDX_FILES.values(), ()))


def _read_idx(info: VisionSet, root: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = read_split(root / info.cls / "raw", train)
    x = torch.from_numpy(images.copy()).unsqueeze(1)  # (N, 1, H, W); copied: the file's buffer is read-only
    classes = len(info.classes or ())
    if int(labels.max(initial=0)) >= classes:
        raise DataError(f"{info.cls}: labels up to {int(labels.max())} in {root / info.cls / 'raw'}, {classes} classes")
    return x, torch.from_numpy(labels.astype(np.int64))


def _torchvision_class(name: str) -> Any:
    import torchvision.datasets

    return getattr(torchvision.datasets, name)


def expected_files(dataset_cls: Any, root: Path) -> list[Path]:
    """The files torchvision reads for this class under ``root``, in its own layout."""
    if hasattr(dataset_cls, "resources"):  # the MNIST family: decompressed IDX files in ROOT/<Class>/raw
        folder = root / dataset_cls.__name__ / "raw"
        return [folder / Path(url).name.removesuffix(".gz") for url, _ in dataset_cls.resources]
    if hasattr(dataset_cls, "base_folder"):  # CIFAR: ROOT/cifar-10-batches-py/...
        folder = root / dataset_cls.base_folder
        names = [f for f, _ in dataset_cls.train_list + dataset_cls.test_list] + [dataset_cls.meta["filename"]]
        return [folder / n for n in names]
    return [root / filename for _, filename, _ in dataset_cls.split_list.values() if "extra" not in filename]


def _check_files(name: str, dataset_cls: Any, root: Path) -> None:
    files = expected_files(dataset_cls, root)
    missing = [f for f in files if not f.is_file()]
    if missing:
        folder = missing[0].parent
        raise DataError(
            f"{name}: files not found; expected {', '.join(f.name for f in missing)} in {folder} "
            f"(torchvision's layout under data.root={root}): put them there, point data.root at "
            "the folder that holds them, or set data.download: true on a machine with a network"
        )


def _read(cfg: DataConfig, dataset_cls: Any, root: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(N, C, H, W) uint8 pixels, (N,) int64 labels and the class names of one split."""
    split = {"split": "train" if train else "test"} if dataset_cls.__name__ == "SVHN" else {"train": train}
    try:
        ds = dataset_cls(str(root), download=cfg.download, **split)
    except (RuntimeError, OSError) as e:  # "Dataset not found or corrupted", no network, a full disk
        where = expected_files(dataset_cls, root)[0].parent
        if cfg.download:
            raise DataError(
                f"{cfg.name}: download failed ({e}); without a network, put the files in {where} "
                "(torchvision's layout) and set data.download: false"
            ) from None
        raise DataError(
            f"{cfg.name}: the files in {where} do not match the published checksums ({e}); "
            "delete them and download again (data.download: true)"
        ) from None
    x = _pixels(ds.data)
    labels = getattr(ds, "targets", None)
    labels = getattr(ds, "labels", None) if labels is None else labels
    y = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    classes = list(getattr(ds, "classes", None) or DIGITS)
    return x, y, classes


def _pixels(data: Any) -> torch.Tensor:
    """torchvision keeps (N, H, W) tensors (MNIST), (N, H, W, C) arrays (CIFAR) or
    (N, C, H, W) arrays (SVHN); all become (N, C, H, W) uint8."""
    x = torch.as_tensor(np.asarray(data)) if not isinstance(data, torch.Tensor) else data
    if x.ndim == 3:
        return x.unsqueeze(1)
    if x.shape[-1] in (1, 3):
        return x.permute(0, 3, 1, 2).contiguous()
    return x
