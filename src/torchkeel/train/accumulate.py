"""Gradient accumulation (``train.accumulate: N``): N consecutive batches per optimiser step.

Each micro-batch's loss is divided by N before its backward, so the summed gradients are those
of the mean loss over the N batches: the step of one batch N times larger, in the memory of
one (nanoGPT's gradient_accumulation_steps). Steps, not micro-batches, are what the loop
counts, so the lr schedule, checkpoints and exact resume work in steps as before; with N = 1
the step is exactly the loop's usual one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch

from torchkeel.errors import ConfigError
from torchkeel.train import runtime


class Accumulated:
    """A loader's batches in groups of ``n``: ``epoch(e, start)`` yields lists of n (x, y),
    skipping the first ``start`` groups (``start * n`` batches of the loader)."""

    def __init__(self, loader: Any, n: int):
        if len(loader) < n:
            raise ConfigError(
                f"train.accumulate: {n} micro-batches per step is more than an epoch's {len(loader)} batches; "
                "lower train.accumulate or train.batch_size"
            )
        self.loader, self.n = loader, n

    @property
    def batch_size(self) -> int:  # samples per optimiser step
        return self.loader.batch_size * self.n

    def __len__(self) -> int:
        return len(self.loader) // self.n

    def epoch(self, epoch: int, start: int = 0) -> Iterator[list[tuple[Any, Any]]]:
        batches = self.loader.epoch(epoch, start * self.n)
        for _ in range(start, len(self)):
            yield [next(batches) for _ in range(self.n)]


def forward_backward(
    micro: list[tuple[Any, Any]],
    forward: Callable,
    forward_loss: Callable,
    loss_fn: Callable,
    augment: Callable | None,
    scaler: torch.amp.GradScaler,
    device: torch.device,
    precision: str,
) -> tuple[list[tuple[Any, Any, torch.Tensor]], torch.Tensor]:
    """Forward and backward over one step's micro-batches, gradients summed: the (outputs,
    targets, loss) of each, for the running metrics, and the step's mean loss."""
    done = []
    for x, y in micro:
        if augment is not None:
            x, y = augment(x, y)  # a dense task's masks move with the pixels
        with runtime.autocast(device, precision):
            out, loss = forward_loss(forward, x, y, loss_fn)  # out: (B, output_size) for most tasks
        scaler.scale(loss if len(micro) == 1 else loss / len(micro)).backward()
        done.append((out, y, loss))
    if len(done) == 1:
        return done, done[0][2]
    return done, torch.stack([loss.detach() for _, _, loss in done]).mean()
