"""Data sets by name. ``load(cfg, seed)`` returns a DataBundle of tensors and its DataSpec."""

from __future__ import annotations

from collections.abc import Callable

from torchkeel.config import DataConfig
from torchkeel.data.bundle import DataBundle, DataSpec, Split
from torchkeel.data.images import load_digits
from torchkeel.data.loader import TensorLoader
from torchkeel.data.series import load_series_csv, load_sine_series
from torchkeel.data.textgen import load_word_order

DATASETS: dict[str, Callable[[DataConfig, int], DataBundle]] = {
    "digits": load_digits,
    "sine_series": load_sine_series,
    "series_csv": load_series_csv,
    "word_order": load_word_order,
}


def load(cfg: DataConfig | str | dict | None = None, seed: int = 0) -> DataBundle:
    """Load a data set by config, by name (``load("digits")``) or by a config dict."""
    if cfg is None:
        cfg = DataConfig()
    elif isinstance(cfg, str):
        cfg = DataConfig(name=cfg)
    elif isinstance(cfg, dict):
        cfg = DataConfig(**cfg)
    return DATASETS[cfg.name](cfg, seed)


__all__ = ["DATASETS", "DataBundle", "DataSpec", "Split", "TensorLoader", "load"]
