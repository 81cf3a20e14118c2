"""Losses by name, from the task of the data (tasks/): ``resolve_loss`` checks a name
against the task, ``build_loss`` makes the function once, before the loop."""

from __future__ import annotations

import torch

from torchkeel.data.bundle import DataSpec
from torchkeel.tasks import task_of
from torchkeel.tasks.base import LossFn

__all__ = ["LossFn", "build_loss", "class_weights", "resolve_loss"]


def resolve_loss(name: str, spec: DataSpec) -> str:
    """``auto`` becomes the task's loss; a loss that cannot fit the task is a ConfigError."""
    return task_of(spec).resolve_loss(name, spec)


def build_loss(
    name: str, label_smoothing: float = 0.0, weights: torch.Tensor | None = None, spec: DataSpec | None = None
) -> LossFn:
    """The loss function ``name`` of ``spec``'s task (without a spec: the task whose loss it
    is). ``weights``: one per class; for bce the positive class is weighted by weights[1] / weights[0]."""
    from torchkeel.tasks import TASKS

    task = task_of(spec) if spec is not None else next(t for t in TASKS.values() if name in t.losses)
    return task.build_loss(name, spec, label_smoothing, weights)


def class_weights(spec: DataSpec, device: torch.device | str) -> torch.Tensor | None:
    """The data's class weights (``data.class_weights``), on ``device``, or None."""
    weights = spec.extra.get("class_weights")
    return None if weights is None else torch.tensor(weights, dtype=torch.float32, device=device)
