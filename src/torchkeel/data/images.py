"""Image data sets: decoded once into float tensors in [0, 1], split, normalised per channel
with statistics of the train split only."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from torchkeel.config import DataConfig
from torchkeel.data.bundle import DataBundle, DataSpec, Split
from torchkeel.data.splits import split_indices


def load_digits(cfg: DataConfig, seed: int) -> DataBundle:
    """scikit-learn's 1,797 handwritten digits, 8x8 grey, values 0..16 (ink is high)."""
    pixels, target = _read_digits()
    x = torch.from_numpy(pixels.reshape(-1, 1, 8, 8) / 16.0)  # (N, 1, 8, 8)
    y = torch.from_numpy(target)
    bundle = image_bundle("digits", x, y, [str(c) for c in range(10)], cfg, seed)
    bundle.spec.extra["background"] = "dark"  # light ink on dark: predict inverts the opposite
    return bundle


def _read_digits() -> tuple[np.ndarray, np.ndarray]:
    """The digits table straight from the file scikit-learn ships (64 pixels + label per row):
    0.1 s, where importing ``sklearn.datasets`` to call its loader takes 1.5 s on 2 cores."""
    spec = importlib.util.find_spec("sklearn")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz" if spec else None
    if path is not None and path.is_file():
        table = np.loadtxt(path, delimiter=",", dtype=np.float32)
        return table[:, :64], table[:, 64].astype(np.int64)
    from sklearn.datasets import load_digits as sk_digits  # another layout: its own loader

    digits = sk_digits()
    return digits.data.astype(np.float32), digits.target.astype(np.int64)


def image_bundle(
    name: str,
    x: torch.Tensor,
    y: torch.Tensor,
    classes: list[str],
    cfg: DataConfig,
    seed: int,
    test: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> DataBundle:
    """Split ``x`` (N, C, H, W) floats in [0, 1] and normalise. A data set's own ``test``
    split is kept as the test split; otherwise ``cfg.test_fraction`` of ``x`` is held out."""
    labels = y.numpy()
    fractions = (cfg.val_fraction,) if test is not None else (cfg.val_fraction, cfg.test_fraction)
    parts = split_indices(labels, len(x), fractions, seed)
    val_idx, train_idx = parts[0], parts[-1]
    test_x, test_y = test if test is not None else (x[parts[1]], y[parts[1]])
    train = Split(x[train_idx], y[train_idx])
    val = Split(x[val_idx], y[val_idx]) if len(val_idx) else None

    mean, std = channel_stats(train.x)
    spec = DataSpec(
        name=name,
        kind="image",
        task="classification",
        input_shape=tuple(x.shape[1:]),
        classes=classes,
        mean=mean.tolist(),
        std=std.tolist(),
    )

    def norm(split: Split | None) -> Split | None:
        return None if split is None else Split(normalise(split.x, mean, std), split.y)

    return DataBundle(spec, norm(train), norm(val), norm(Split(test_x, test_y)))


def channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of (N, C, H, W); std floored so constant channels stay finite."""
    flat = x.transpose(0, 1).reshape(x.shape[1], -1).double()
    return flat.mean(1).float(), flat.std(1).clamp_min(1e-6).float()


def normalise(x: torch.Tensor, mean: torch.Tensor | list[float], std: torch.Tensor | list[float]) -> torch.Tensor:
    mean = torch.as_tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - mean) / std
