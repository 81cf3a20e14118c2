"""Regression: ``spec.targets`` real values per sample, float32 (N, targets), trained with MSE.

Metrics from running sums per target: [sum y, sum y^2, sum err^2, sum |err|], so R² needs no
second pass. A standardised target (``spec.extra["target_scale"]``, tables) is put back in its
units when decoded.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from torchkeel.tasks.base import Task
from torchkeel.tasks.meter import TrainMeter, add_loss

METRICS = ("mse", "rmse", "mae", "r2")


class RegressionAccumulator:
    def __init__(self, spec: Any, names: list[str], device: torch.device, top_k: int = 3, *, details: bool = False):
        self.names = [n for n in names if n in METRICS]
        self.sums = torch.zeros(2, dtype=torch.float64, device=device)  # [loss sum, count]
        self.has_loss = False
        self.reg = torch.zeros(4, spec.targets, dtype=torch.float64, device=device)

    @torch.no_grad()
    def update(self, out: torch.Tensor, y: torch.Tensor, loss: torch.Tensor | None = None) -> None:
        self.has_loss |= add_loss(self.sums, loss, y.shape[0])
        out = out.detach().double()
        y = y.view_as(out).double()
        err = out - y
        self.reg += torch.stack([y.sum(0), (y * y).sum(0), (err * err).sum(0), err.abs().sum(0)])

    def compute(self) -> dict[str, float]:
        loss_sum, n = self.sums.tolist()
        result = {"loss": loss_sum / max(n, 1)} if self.has_loss else {}
        sum_y, sum_y2, sse, sae = self.reg
        mse = (sse / n).mean().item()
        variance = sum_y2 - sum_y * sum_y / n  # total sum of squares per target
        r2 = (1 - sse / variance.clamp_min(1e-12)).mean().item()
        values = {"mse": mse, "rmse": mse**0.5, "mae": (sae / n).mean().item(), "r2": r2}
        return result | {k: values[k] for k in self.names}

    def details(self) -> dict[str, Any]:
        return {}


def mse_loss(name: str, spec: Any, label_smoothing: float = 0.0, weights: torch.Tensor | None = None):
    return lambda out, y: F.mse_loss(out, y.view_as(out))


def unscale(out: torch.Tensor, spec: Any) -> torch.Tensor:
    """Outputs in the target's own units (tables standardise it for training)."""
    scale = spec.extra.get("target_scale")
    return out * scale["std"] + scale["mean"] if scale else out


def decode(out: torch.Tensor, spec: Any, k: int) -> list[dict[str, Any]]:
    return [{"value": row} for row in unscale(out.float(), spec).tolist()]


REGRESS = Task(
    name="regression",
    description="regression",
    losses=("mse",),
    metrics=METRICS,
    key_metric="r2",
    lower_is_better=frozenset({"loss", "mse", "rmse", "mae"}),
    uses=frozenset({"predict", "serve", "export", "eval", "explain", "tta", "finetune"}),
    output_size=lambda spec: spec.targets,
    build_loss=mse_loss,
    accumulator=RegressionAccumulator,
    train_meter=lambda spec, device: TrainMeter(device, None),
    decode=decode,
    export_output="the predicted values",
    report_sections=("regression",),
)
