"""Numeric series cut into windows for forecasting: x (N, window, features), y (N, horizon).

Splits are chronological (train, then val, then test: shuffling windows across time would let
the model see the future it is asked to forecast). A window belongs to the split that holds
its first forecast step; its inputs may reach back into the preceding split, which is the past
and fair to see. Every column is standardised with the train part's mean and std; the
forecast is in those units too (``spec.extra`` keeps the target's mean and std to undo it).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import torch

from torchkeel.config_data import DataConfig, SeriesConfig
from torchkeel.data.bundle import DataBundle, DataSpec, Split
from torchkeel.errors import DataError

SINE_LENGTH = 4000  # time steps of the synthetic series
SINE_SEED = 0  # the series is the same for every run; the run's seed only seeds training


def load_sine_series(cfg: DataConfig, seed: int) -> DataBundle:
    """A synthetic, seeded series: two sines (periods 25 and 63 steps), a slow drift and
    Gaussian noise (std 0.2). Predicting the last value scores its noise twice plus the
    step-to-step change; a model that reads the whole window can average the noise away."""
    t = np.arange(SINE_LENGTH, dtype=np.float64)
    rng = np.random.default_rng(SINE_SEED)
    values = (
        np.sin(2 * math.pi * t / 25)
        + 0.5 * np.sin(2 * math.pi * t / 63 + 1.0)
        + 0.3 * np.sin(2 * math.pi * t / SINE_LENGTH)
        + rng.normal(0.0, 0.2, SINE_LENGTH)
    )
    series = cfg.series or SeriesConfig()
    return series_bundle("sine_series", values[:, None], ["value"], 0, cfg, series)


def load_series_csv(cfg: DataConfig, seed: int) -> DataBundle:
    """Columns of a CSV file (header row, one row per time step, oldest first)."""
    series = cfg.series or SeriesConfig()
    if series.path is None or series.target is None:
        raise DataError("series_csv needs data.series.path (the CSV file) and data.series.target (the column)")
    path = Path(series.path)
    columns = list(dict.fromkeys([series.target, *(series.features or [])]))
    values = read_columns(path, columns)
    return series_bundle(path.stem, values, columns, 0, cfg, series)


def read_columns(path: Path, columns: list[str]) -> np.ndarray:
    """The named columns as floats (T, len(columns)); a missing column, an empty or
    non-numeric cell is an error naming the row."""
    if not path.is_file():
        raise DataError(f"data.series.path: no such file {path}")
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            missing = [c for c in columns if c not in header]
            if missing:
                raise DataError(f"{path}: no column {', '.join(map(repr, missing))} (columns: {', '.join(header)})")
            rows = []
            for line, row in enumerate(reader, start=2):
                try:
                    rows.append([float(row[c]) for c in columns])
                except (TypeError, ValueError):
                    bad = next(c for c in columns if not _is_number(row[c]))
                    raise DataError(f"{path}, line {line}: column '{bad}' is {row[bad]!r}, not a number") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a UTF-8 CSV file") from None
    values = np.asarray(rows, dtype=np.float64).reshape(-1, len(columns))
    if not np.isfinite(values).all():
        raise DataError(f"{path}: the series holds nan or inf; fill or drop those rows first")
    return values


def series_bundle(
    name: str, values: np.ndarray, columns: list[str], target: int, cfg: DataConfig, series: SeriesConfig
) -> DataBundle:
    """Windows over ``values`` (T, F) forecasting column ``target`` ``horizon`` steps ahead."""
    total, window, horizon = len(values), series.window, series.horizon
    starts = np.arange(window, total - horizon + 1)  # index of each window's first forecast step
    if len(starts) < 10:
        raise DataError(f"{name}: {total} time steps make {len(starts)} windows of {window}+{horizon}; too few")
    train_end = int(round(total * (1 - cfg.val_fraction - cfg.test_fraction)))
    val_end = int(round(total * (1 - cfg.test_fraction)))
    mean = values[:train_end].mean(0)
    std = values[:train_end].std(0).clip(min=1e-8)
    scaled = torch.from_numpy((values - mean) / std).float()  # (T, F)

    def windows(mask: np.ndarray) -> Split | None:
        chosen = starts[mask]
        if len(chosen) == 0:
            return None
        steps = torch.from_numpy(chosen)[:, None]
        x = scaled[steps + torch.arange(-window, 0)]  # (N, window, F)
        y = scaled[steps + torch.arange(horizon), target]  # (N, horizon)
        return Split(x, y)

    train = windows(starts < train_end)
    val = windows((starts >= train_end) & (starts < val_end))
    test = windows(starts >= val_end)
    if train is None or test is None:
        raise DataError(f"{name}: the chronological split leaves no train or test windows; lower data.series.window")
    spec = DataSpec(
        name=name,
        kind="series",
        task="forecast",
        input_shape=(window, len(columns)),
        targets=horizon,
        mean=mean.tolist(),
        std=std.tolist(),
        extra={
            "columns": columns,
            "target": columns[target],
            "window": window,
            "horizon": horizon,
            "target_mean": float(mean[target]),
            "target_std": float(std[target]),
        },
    )
    return DataBundle(spec, train, val, test)


def last_value_baseline(x: torch.Tensor, horizon: int, target: int = 0) -> torch.Tensor:
    """The naive forecast: every future step equals the window's last value. (N, horizon)."""
    return x[:, -1, target : target + 1].expand(-1, horizon)


def _is_number(text: str | None) -> bool:
    try:
        float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True
