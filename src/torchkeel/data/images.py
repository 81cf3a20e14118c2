"""Image data sets: decoded once into tensors, split, normalised per channel with statistics
of the train split only.

Pixels arrive either as floats in [0, 1] (digits) or as uint8 (MNIST, CIFAR, image folders);
uint8 sets stay uint8 until after the split, and their statistics come from per-channel
histograms, which are exact and read 70,000 MNIST images in a few hundredths of a second.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from torchkeel.config_data import DataConfig
from torchkeel.data.bundle import DataBundle, DataSpec, Split
from torchkeel.data.splits import holdout_indices


def load_digits(cfg: DataConfig, seed: int) -> DataBundle:
    """scikit-learn's 1,797 handwritten digits, 8x8 grey, values 0..16 (ink is high)."""
    pixels, target = _read_digits()
    x = torch.from_numpy(pixels.reshape(-1, 1, 8, 8) / 16.0)  # (N, 1, 8, 8)
    y = torch.from_numpy(target)
    bundle = image_bundle("digits", x, y, [str(c) for c in range(10)], cfg, seed)
    bundle.spec.extra["background"] = "dark"  # light ink on dark: predict inverts the opposite
    bundle.spec.extra["flip"] = False  # a mirrored digit is not the same digit
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
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> DataBundle:
    """Split ``x`` (N, C, H, W), floats in [0, 1] or uint8, and normalise to float32.

    A data set's own ``test`` (and ``val``) split is kept; otherwise ``cfg.test_fraction``
    (``cfg.val_fraction``) of ``x`` is held out, stratified by class and seeded.
    """
    train_idx, val_idx, test_idx = holdout_indices(y.numpy(), len(x), cfg, seed, val is not None, test is not None)
    train = Split(x[train_idx], y[train_idx])
    val_split = Split(*val) if val is not None else Split(x[val_idx], y[val_idx]) if len(val_idx) else None
    test_split = Split(*test) if test is not None else Split(x[test_idx], y[test_idx])

    mean, std = channel_stats(train.x)
    spec = image_spec(name, tuple(x.shape[1:]), classes, mean, std)

    def norm(split: Split | None) -> Split | None:
        return None if split is None else Split(normalise(split.x, mean, std), split.y)

    return DataBundle(spec, norm(train), norm(val_split), norm(test_split))


def image_spec(
    name: str, shape: tuple[int, ...], classes: list[str], mean: torch.Tensor, std: torch.Tensor
) -> DataSpec:
    return DataSpec(
        name=name,
        kind="image",
        task="classification",
        input_shape=tuple(int(d) for d in shape),
        classes=classes,
        mean=mean.tolist(),
        std=std.tolist(),
    )


def channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of (N, C, H, W) on the [0, 1] scale; std floored so constant
    channels stay finite. uint8 pixels (0..255) are counted exactly with histograms."""
    if x.dtype == torch.uint8:
        counts = torch.stack([torch.bincount(x[:, c].reshape(-1), minlength=256) for c in range(x.shape[1])])
        return stats_from_histogram(counts)
    flat = x.transpose(0, 1).reshape(x.shape[1], -1).double()
    return flat.mean(1).float(), flat.std(1).clamp_min(1e-6).float()


def stats_from_histogram(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (unbiased) std on the [0, 1] scale from per-channel counts (C, 256) of uint8
    values: the same numbers as ``channel_stats`` on ``x / 255``."""
    counts = counts.double()
    values = torch.arange(256, dtype=torch.float64) / 255.0
    n = counts.sum(1)
    mean = (counts * values).sum(1) / n
    var = (counts * (values - mean[:, None]) ** 2).sum(1) / (n - 1).clamp_min(1)
    return mean.float(), var.sqrt().clamp_min(1e-6).float()


def normalise(x: torch.Tensor, mean: torch.Tensor | list[float], std: torch.Tensor | list[float]) -> torch.Tensor:
    """(x - mean) / std per channel; uint8 input is first scaled to [0, 1]."""
    if x.dtype == torch.uint8:
        # one pass: (x/255 - m)/s == (x - 255m) / (255s)
        mean = torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1) * 255.0
        std = torch.as_tensor(std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1) * 255.0
        return x.float().sub_(mean).div_(std)  # in place: one float32 allocation, not two
    mean = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


def renormalise(bundle: DataBundle, mean: list[float], std: list[float], source: str) -> DataBundle:
    """The bundle normalised with a pretrained model's statistics instead of the train split's
    (in place: x * s_data + m_data is the [0, 1] pixel, then (pixel - mean) / std). The spec
    records them, so predict, serve and export normalise as the model was pretrained.
    Grey images take the mean of RGB statistics (a grey pixel is R = G = B)."""
    from dataclasses import replace

    spec = bundle.spec
    channels = spec.input_shape[0]
    if channels != len(mean):
        mean, std = [sum(mean) / len(mean)] * channels, [sum(std) / len(std)] * channels
    old_mean, old_std = torch.tensor(spec.mean), torch.tensor(spec.std)
    scale, shift = old_std / torch.tensor(std), (old_mean - torch.tensor(mean)) / torch.tensor(std)
    for split in bundle.splits().values():
        if isinstance(split, Split):
            view = (1, -1, 1, 1)
            split.x.mul_(scale.to(split.x).view(view)).add_(shift.to(split.x).view(view))
        else:  # streamed from files: decoded and normalised per batch
            split.mean, split.std = list(mean), list(std)
    spec = replace(spec, mean=list(mean), std=list(std), extra={**spec.extra, "normalisation": source})
    return replace(bundle, spec=spec)
