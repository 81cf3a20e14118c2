"""The training loop's running loss (and, for tasks with classes, accuracy): two in-place adds
per step on the device, read once per epoch (a full metric accumulator costs ~3% of a small
CNN's step)."""

from __future__ import annotations

from collections.abc import Callable

import torch


class TrainMeter:
    """``correct(out, y)``: the number of right predictions in a batch, or None for a task
    without classes (then only the loss is kept)."""

    def __init__(self, device: torch.device, correct: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None):
        self.correct = correct
        self.totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, n

    @torch.no_grad()
    def update(self, out: torch.Tensor, y: torch.Tensor, loss: torch.Tensor) -> None:
        n = len(y)
        self.totals[0] += loss.detach() * n
        if self.correct is not None:
            self.totals[1] += self.correct(out, y)
        self.totals[2] += n

    def compute(self) -> dict[str, float]:
        loss_sum, correct, n = self.totals.tolist()
        result = {"loss": loss_sum / max(n, 1)}
        if self.correct is not None:
            result["accuracy"] = correct / max(n, 1)
        return result


def add_loss(sums: torch.Tensor, loss: torch.Tensor | None, n: int) -> bool:
    """Add a batch of ``n`` to an accumulator's [loss sum, count] tensor (kept as its own
    attribute, so ranks can all-reduce it); True when the batch had a loss."""
    if loss is not None:
        sums[0] += loss.detach().double() * n
    sums[1] += n
    return loss is not None
