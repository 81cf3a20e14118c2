"""One streaming pass over a split collecting what the report shows, in bounded memory.

Besides every metric of the task and the tables of :meth:`MetricAccumulator.details`, it keeps
the ``examples`` most confidently wrong predictions (a running top-k: at most ``examples`` inputs
held at any time) and, for regression, at most ``MAX_POINTS`` (prediction, target) pairs drawn
uniformly at random (seeded) for the scatter and residual plots: the points with the smallest
random keys, a reservoir sample that never holds more than ``MAX_POINTS`` pairs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from torchkeel.data.bundle import DataSpec, Split
from torchkeel.evaluate.metrics import MetricAccumulator
from torchkeel.tasks import Task, task_of
from torchkeel.train.losses import LossFn

MAX_POINTS = 5000


@dataclass
class Wrong:
    """The most confidently wrong predictions, most confident first."""

    x: torch.Tensor  # (K, *input_shape) model inputs (normalised), on the CPU
    true: list[int]
    pred: list[int]
    confidence: list[float]


@dataclass
class Analysis:
    split: str
    size: int
    metrics: dict[str, float]
    details: dict[str, Any]
    wrong: Wrong | None = None
    points: tuple[torch.Tensor, torch.Tensor] | None = None  # regression: (pred, true), each (P, targets)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """What evaluation.json records: metrics and the per-class / calibration tables."""
        return {"split": self.split, "size": self.size, "metrics": self.metrics, **self.details}


@torch.inference_mode()
def analyse(
    model: nn.Module,
    split: Split,
    spec: DataSpec,
    loss_fn: LossFn | None,
    *,
    split_name: str = "test",
    examples: int = 8,
    batch_size: int = 1024,
    seed: int = 0,
) -> Analysis:
    model.eval()
    device = next(model.parameters()).device
    task = task_of(spec)
    acc = MetricAccumulator(spec, list(task.metrics), device, details=True)
    classes = task.predict_index is not None  # wrong predictions for tasks with classes
    wrong = _TopWrong(examples, task) if classes else None
    # (prediction, target) points for the plots of tasks that predict values (regression)
    points = _Reservoir(MAX_POINTS, seed) if not classes and "regression" in task.report_sections else None
    for start in range(0, len(split), batch_size):
        x = split.x[start : start + batch_size].to(device, non_blocking=True)
        y = split.y[start : start + batch_size].to(device, non_blocking=True)
        out, loss = task.outputs(model, x, y, loss_fn)
        out = out.float() if isinstance(out, torch.Tensor) else out
        acc.update(out, y, loss)
        if wrong is not None:
            wrong.update(x, y, out)
        if points is not None:
            points.update(out, y.view_as(out))
    return Analysis(
        split=split_name,
        size=len(split),
        metrics=acc.compute(),
        details=acc.details(),
        wrong=wrong.result() if wrong is not None else None,
        points=points.result() if points is not None else None,
    )


class _TopWrong:
    """Running top-k by confidence of the wrong predictions."""

    def __init__(self, k: int, task: Task):
        self.k, self.task = k, task
        self.x: torch.Tensor | None = None
        self.meta = torch.zeros(0, 3)  # (kept, [confidence, true, pred])

    def update(self, x: torch.Tensor, y: torch.Tensor, out: torch.Tensor) -> None:
        pred = self.task.predict_index(out)
        wrong = pred != y.long()
        if not wrong.any():
            return
        conf = self.task.probabilities(out).amax(1)[wrong]  # the predicted class's probability
        meta = torch.stack([conf.double(), y.long()[wrong].double(), pred[wrong].double()], 1).cpu().float()
        xs = x[wrong].cpu()
        if self.x is not None:
            meta, xs = torch.cat([self.meta, meta]), torch.cat([self.x, xs])
        keep = meta[:, 0].argsort(descending=True, stable=True)[: self.k]
        self.meta, self.x = meta[keep], xs[keep]

    def result(self) -> Wrong | None:
        if self.x is None:
            return None
        conf, true, pred = self.meta.T
        return Wrong(self.x, true.long().tolist(), pred.long().tolist(), conf.tolist())


class _Reservoir:
    """A uniform random sample of at most ``size`` rows: those with the smallest random keys."""

    def __init__(self, size: int, seed: int):
        self.size = size
        self.generator = torch.Generator().manual_seed(seed)
        self.keys = torch.zeros(0)
        self.rows: tuple[torch.Tensor, torch.Tensor] | None = None

    def update(self, pred: torch.Tensor, true: torch.Tensor) -> None:
        keys = torch.rand(len(pred), generator=self.generator)
        pred, true = pred.cpu().float(), true.cpu().float()
        if self.rows is not None:
            keys = torch.cat([self.keys, keys])
            pred, true = torch.cat([self.rows[0], pred]), torch.cat([self.rows[1], true])
        keep = keys.argsort()[: self.size]
        self.keys, self.rows = keys[keep], (pred[keep], true[keep])

    def result(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        return self.rows
