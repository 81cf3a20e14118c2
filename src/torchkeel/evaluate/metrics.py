"""``evaluate``: a model's loss and metrics over a split, streamed in large batches.

The metrics themselves belong to the task (tasks/): a classification task keeps a running
confusion matrix, calibration bins and a score histogram, regression running sums, so a split
of any size is evaluated in fixed memory and with one host sync at the end. The shared
arithmetic lives in tasks/scores.py (re-exported here).
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from torchkeel.data.bundle import DataSpec, Split
from torchkeel.evaluate.tta import tta_forward
from torchkeel.tasks import task_of
from torchkeel.tasks.base import Accumulator, LossFn
from torchkeel.tasks.scores import (  # noqa: F401  (re-exported)
    ECE_BINS,
    LOGIT_RANGE,
    SCORE_BINS,
    binned_auc,
    expected_calibration_error,
    per_class_scores,
    roc_points,
    score_bin,
)


def MetricAccumulator(  # noqa: N802  (a factory named as the accumulator it returns)
    spec: DataSpec, names: list[str], device: torch.device, top_k: int = 3, *, details: bool = False
) -> Accumulator:
    """The streaming metrics of ``spec``'s task: ``update(out, y, loss)`` per batch,
    ``compute()`` (one host sync), ``details()`` (the tables the report shows)."""
    task = task_of(spec)
    if task.accumulator is None:
        task.require("eval", spec.name)
    return task.accumulator(spec, task.own_metrics(names), device, top_k, details=details)


def metrics_for(spec: DataSpec, names: list[str]) -> list[str]:
    """The metrics of ``names`` that ``spec``'s task computes."""
    return task_of(spec).select_metrics(names, spec)


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    split: Split,
    spec: DataSpec,
    loss_fn: LossFn | None,
    metrics: list[str],
    batch_size: int = 1024,
    top_k: int = 3,
    tta: str = "none",
) -> dict[str, float]:
    """Loss and metrics of ``model`` over ``split`` in large batches, model left in eval mode.
    ``tta``: average image logits over mirrored (and shifted) copies (evaluate/tta.py)."""
    model.eval()
    device = next(model.parameters()).device
    acc = MetricAccumulator(spec, metrics, device, top_k)
    task = task_of(spec)
    forward = model if tta == "none" else functools.partial(tta_forward, model, mode=tta)
    for start in range(0, len(split), batch_size):
        x = split.x[start : start + batch_size].to(device, non_blocking=True)
        y = split.y[start : start + batch_size].to(device, non_blocking=True)
        out, loss = task.outputs(forward, x, y, loss_fn)
        acc.update(out, y, loss)
    return acc.compute()
