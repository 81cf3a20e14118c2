"""The learning-rate range test (Smith 2017, "Cyclical Learning Rates", section 3.3; the
fastai variant with a smoothed loss).

Train for at most ``steps`` mini-batches while the learning rate grows exponentially from
``start_lr`` to ``end_lr``; record the loss, smoothed by an exponential moving average with
bias correction (``smoothing`` = 0.98, as fastai); stop early once the smoothed loss exceeds
``diverge`` (4) times its minimum or stops being finite.

Suggested learning rate: **the learning rate at the minimum of the smoothed loss, divided by
10** (fastai's ``lr_min`` rule): at the minimum the loss is about to blow up, a tenth of it is
still in the steep, stable descent. The steepest-descent point is reported beside it.

Afterwards the model's weights and buffers, the optimiser's state and the torch RNG are put
back exactly as they were, so the test can run in the middle of a session.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from torchkeel.config import RunConfig
from torchkeel.data import augment as aug
from torchkeel.data.bundle import DataBundle
from torchkeel.data.kinds import kind_of
from torchkeel.data.loader import TensorLoader
from torchkeel.errors import ConfigError
from torchkeel.train import runtime
from torchkeel.train.losses import build_loss, resolve_loss
from torchkeel.train.optim import build_optimizer, set_lr


@dataclass
class LRFindResult:
    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)  # raw batch losses
    smoothed: list[float] = field(default_factory=list)
    diverged: bool = False

    @property
    def min_loss_lr(self) -> float:
        return self.lrs[min(range(len(self.smoothed)), key=self.smoothed.__getitem__)]

    @property
    def suggestion(self) -> float:
        """The documented rule: learning rate at the smoothed loss's minimum, / 10."""
        return self.min_loss_lr / 10

    @property
    def steepest_lr(self) -> float:
        """Where the smoothed loss falls fastest per decade of learning rate (before its minimum)."""
        end = self.smoothed.index(min(self.smoothed)) + 1
        if end < 3:
            return self.lrs[0]
        logs = [math.log10(lr) for lr in self.lrs[:end]]
        slopes = [(self.smoothed[i + 1] - self.smoothed[i]) / (logs[i + 1] - logs[i]) for i in range(end - 1)]
        return self.lrs[min(range(len(slopes)), key=slopes.__getitem__)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "suggestion": self.suggestion,
            "min_loss_lr": self.min_loss_lr,
            "steepest_lr": self.steepest_lr,
            "diverged": self.diverged,
            "steps": len(self.lrs),
            "lrs": self.lrs,
            "losses": self.losses,
            "smoothed": self.smoothed,
        }


def lr_find(
    model: nn.Module,
    data: DataBundle,
    config: RunConfig | None = None,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    steps: int = 100,
    smoothing: float = 0.98,
    diverge: float = 4.0,
) -> LRFindResult:
    """Run the range test on ``model`` with ``optimizer`` (default: the config's optimiser,
    built fresh); both are restored afterwards."""
    if not 0 < start_lr < end_lr:
        raise ConfigError(f"lr-find: need 0 < start_lr < end_lr (got {start_lr:g}, {end_lr:g})")
    if steps < 5:
        raise ConfigError(f"lr-find: steps must be at least 5 (got {steps})")
    cfg = config or RunConfig()
    t = cfg.train
    device = runtime.pick_device(t.device)
    model.to(device)
    optimizer = optimizer or build_optimizer(model, t.optimizer)
    saved = _snapshot(model, optimizer)
    try:
        return _ramp(model, optimizer, data, cfg, device, start_lr, end_lr, steps, smoothing, diverge)
    finally:
        _restore(model, optimizer, saved)


def _ramp(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: DataBundle,
    cfg: RunConfig,
    device: torch.device,
    start_lr: float,
    end_lr: float,
    steps: int,
    smoothing: float,
    diverge: float,
) -> LRFindResult:
    t = cfg.train
    loss_fn = build_loss(resolve_loss(t.loss, data.spec), t.label_smoothing, spec=data.spec)
    augment = aug.is_active(cfg.data.augment) and kind_of(data.spec).pixels
    loader = TensorLoader(data.train.x.to(device), data.train.y.to(device), t.batch_size, seed=cfg.seed)
    result, average = LRFindResult(), 0.0
    model.train()
    batches = (batch for epoch in range(steps) for batch in loader.epoch(epoch))  # as many epochs as needed
    for i, (x, y) in zip(range(steps), batches, strict=False):  # stops after `steps`
        lr = start_lr * (end_lr / start_lr) ** (i / (steps - 1))  # exponential ramp
        set_lr(optimizer, lr)
        if augment:
            x, y = aug.augment(x, y, cfg.data.augment, data.spec)
        with runtime.autocast(device, t.precision):
            loss = loss_fn(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if t.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        optimizer.step()
        value = loss.item()
        average = smoothing * average + (1 - smoothing) * value
        smoothed = average / (1 - smoothing ** (i + 1))  # bias-corrected moving average
        if not math.isfinite(smoothed) or (result.smoothed and smoothed > diverge * min(result.smoothed)):
            result.diverged = True
            break
        result.lrs.append(lr)
        result.losses.append(value)
        result.smoothed.append(smoothed)
    if len(result.lrs) < 2:
        raise ConfigError(f"lr-find: the loss diverged at once from {start_lr:g}; try a smaller --start-lr")
    return result


def _snapshot(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return {
        "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "optimizer": copy.deepcopy(optimizer.state_dict()),
        "training": model.training,
        "rng": torch.get_rng_state(),
        "cuda_rng": cuda,
    }


def _restore(model: nn.Module, optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    model.train(saved["training"])
    torch.set_rng_state(saved["rng"])
    if saved["cuda_rng"] is not None:
        torch.cuda.set_rng_state_all(saved["cuda_rng"])


def plot(result: LRFindResult) -> bytes:
    """Loss against learning rate (log scale) with the suggestion marked, as PNG bytes."""
    from matplotlib.figure import Figure

    from torchkeel.evaluate.plots import png

    fig = Figure(figsize=(6.5, 4))
    ax = fig.add_subplot()
    ax.plot(result.lrs, result.losses, color="#bbbbbb", lw=1, label="batch loss")
    ax.plot(result.lrs, result.smoothed, color="#1f77b4", lw=2, label="smoothed")
    ax.axvline(result.suggestion, color="#d62728", ls="--", label=f"suggested {result.suggestion:.2e} (min / 10)")
    ax.axvline(result.min_loss_lr, color="#7f7f7f", ls=":", label=f"minimum {result.min_loss_lr:.2e}")
    ax.set_xscale("log")
    low, high = min(result.smoothed), max(result.smoothed[: max(2, len(result.smoothed) // 3)])
    ax.set_ylim(low - 0.1 * (high - low), high + 0.3 * (high - low))
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title("Learning-rate range test" + (" (stopped: loss diverged)" if result.diverged else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return png(fig)
