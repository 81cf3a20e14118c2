"""Series forecasting: the next ``horizon`` values of a target column from a window of past
steps (data/series.py). The regression task's loss and metrics, composed rather than
inherited; forecasts are decoded back to the series' units with the target column's own mean
and standard deviation, which the windows were standardised by."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from torchkeel.tasks.regress import REGRESS


def decode(out: torch.Tensor, spec: Any, k: int) -> list[dict[str, Any]]:
    mean, std = spec.extra.get("target_mean", 0.0), spec.extra.get("target_std", 1.0)
    return [{"value": row} for row in (out.float() * std + mean).tolist()]


FORECAST = dataclasses.replace(
    REGRESS,
    name="forecast",
    description="series forecasting",
    key_metric="rmse",
    decode=decode,
    export_output="the next values of the series, standardised (times target_std plus target_mean gives units)",
)
