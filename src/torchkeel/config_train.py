"""The training section's sub-sections (``train.early_stopping``, ``train.checkpoint`` ...)
and time budgets written as ``90``, ``30s``, ``5m`` or ``1h``.

Split from config.py, which imports and re-exports every name here.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field

from torchkeel.config_data import Strict
from torchkeel.errors import ConfigError

DURATION = re.compile(r"\s*(\d+(?:\.\d*)?)\s*(s|m|min|h)?\s*")
UNIT_SECONDS = {None: 1.0, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_duration(value: float | int | str, what: str) -> float:
    """Seconds from ``90``, ``"90"``, ``"30s"``, ``"5m"`` or ``"1h"``; ConfigError naming ``what``."""
    if isinstance(value, bool):
        raise ConfigError(f"{what}: expected a time such as 30s, 5m or 1h, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = DURATION.fullmatch(str(value))
        if match is None:
            raise ConfigError(f"{what}: expected a time such as 30s, 5m or 1h, got {str(value)[:40]!r}")
        seconds = float(match.group(1)) * UNIT_SECONDS[match.group(2)]
    if not seconds > 0 or seconds == float("inf"):
        raise ConfigError(f"{what}: a time must be above zero, got {value!r}")
    return seconds


class EarlyStoppingConfig(Strict):
    monitor: str = "val/loss"
    patience: int = Field(5, ge=1, description="epochs without improvement before stopping")
    mode: Literal["auto", "min", "max"] = "auto"
    min_delta: float = Field(0.0, ge=0.0)
    restore_best: bool = True


class CheckpointConfig(Strict):
    every_epochs: int = Field(1, ge=1, description="checkpoint at the end of every N-th epoch")
    min_seconds: float = Field(
        30.0, ge=0.0, description="skip an epoch-end checkpoint within this many seconds of the last (final: always)"
    )
    every_steps: int | None = Field(None, ge=1, description="also checkpoint every N optimiser steps, mid-epoch")
    every_minutes: float | None = Field(
        10.0, gt=0.0, description="also checkpoint when this many minutes passed since the last (null: off)"
    )
    keep: int = Field(2, ge=1, description="checkpoints kept on disk (a corrupt newest one falls back to the previous)")


class FinetuneConfig(Strict):
    """Transfer learning's second phase: unfreeze every layer, train on at a lower learning rate."""

    epochs: int = Field(3, ge=1, description="epochs with every layer trainable, after train.epochs")
    lr: float = Field(1e-4, gt=0.0, description="peak learning rate of this phase (below the head's)")


class GanConfig(Strict):
    """The GAN loop's settings (DCGAN's by default: Adam, lr 2e-4, beta1 0.5)."""

    lr: float = Field(2e-4, gt=0.0, description="Adam learning rate of both networks")
    betas: tuple[float, float] = (0.5, 0.999)
    d_steps: int = Field(1, ge=1, description="discriminator steps per generator step")
    grid: int = Field(64, ge=1, le=1024, description="samples in each epoch's PNG grid (fixed noise)")
    frechet_samples: int = Field(2000, ge=16, description="real and generated samples for the Frechet distance")
    classifier_epochs: int = Field(4, ge=1, description="epochs of the feature classifier (simple_cnn)")


class LookaheadConfig(Strict):
    """airbench's lookahead EMA of the weights; the final weights are the average (train/lookahead.py)."""

    decay: float = Field(0.95**5, ge=0.0, lt=1.0, description="EMA decay per sync at the end (ramps up as (t/T)^3)")
    every: int = Field(5, ge=1, description="optimiser steps between syncs of the weights with their average")


class MlflowConfig(Strict):
    tracking_uri: str | None = Field(None, description="default: sqlite:///<out_dir>/mlflow.db")
    experiment: str | None = Field(None, description="default: the run's name")
