"""Losses by name, checked against the task of the data."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from torchkeel.data.bundle import DataSpec
from torchkeel.errors import ConfigError

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# which loss fits which task, and the default for each
TASK_LOSS = {"classification": "cross_entropy", "binary": "bce", "regression": "mse"}


def resolve_loss(name: str, spec: DataSpec) -> str:
    """``auto`` becomes the task's loss; a loss that cannot fit the task is a ConfigError."""
    if name == "auto":
        return TASK_LOSS[spec.task]
    if name == "bce" and spec.task == "classification" and spec.num_classes == 2:
        return name  # caller turns the spec binary (one logit)
    if TASK_LOSS[spec.task] != name:
        raise ConfigError(
            f"train.loss: '{name}' does not fit data '{spec.name}', a {spec.task} task; "
            f"use '{TASK_LOSS[spec.task]}' (or 'auto')"
        )
    return name


def build_loss(name: str, label_smoothing: float = 0.0, weights: torch.Tensor | None = None) -> LossFn:
    """``weights``: one per class (cross-entropy); for bce the positive class is weighted by
    weights[1] / weights[0]."""
    if name == "cross_entropy":
        return lambda out, y: F.cross_entropy(out, y, weight=weights, label_smoothing=label_smoothing)
    if name == "mse":
        return lambda out, y: F.mse_loss(out, y.view_as(out))
    if name == "bce":
        pos_weight = None if weights is None else weights[1:2] / weights[0]
        return lambda out, y: F.binary_cross_entropy_with_logits(out.view(-1), y.float(), pos_weight=pos_weight)
    raise AssertionError(f"unresolved loss {name}")


def class_weights(spec: DataSpec, device: torch.device | str) -> torch.Tensor | None:
    """The data's class weights (``data.class_weights``), on ``device``, or None."""
    weights = spec.extra.get("class_weights")
    return None if weights is None else torch.tensor(weights, dtype=torch.float32, device=device)
