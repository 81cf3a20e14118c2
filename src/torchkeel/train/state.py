"""The loop's own state (position, history, early stopping), JSON-able for checkpoints."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from torch import nn

from torchkeel.config import EarlyStoppingConfig
from torchkeel.errors import ConfigError


@dataclass
class LoopState:
    epoch: int = 0  # the epoch in progress (or next to start)
    batch: int = 0  # batches of ``epoch`` already done
    global_step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)  # one record per epoch
    steps: list[dict[str, Any]] = field(default_factory=list)  # one record per logged step
    best: float | None = None  # early stopping: best monitored value so far
    best_epoch: int = 0
    bad_epochs: int = 0
    stopped_early: bool = False
    steps_per_epoch: int = 0  # what ``batch`` counts in; a resume with another batch size is refused
    nan_skips: int = 0  # steps skipped for a non-finite loss or gradient (train.on_nan: skip)
    scaler: dict[str, Any] = field(default_factory=dict)  # fp16 GradScaler state
    trained_seconds: float = 0.0  # training time so far, over every session of the run (train.max_time)
    stopped_by: str = ""  # why training ended before train.epochs: early_stopping, max_time or a hook

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoopState:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class EarlyStopping:
    """Stops after ``patience`` epochs without improving ``monitor`` by ``min_delta``, and
    keeps a copy of the best weights (on the model's device) to restore at the end."""

    def __init__(self, cfg: EarlyStoppingConfig, logged: list[str]):
        if cfg.monitor not in logged:
            raise ConfigError(
                f"train.early_stopping.monitor: '{cfg.monitor}' is not logged; choose one of {', '.join(logged)}"
            )
        self.cfg = cfg
        from torchkeel.tasks import lower_is_better

        self.mode = cfg.mode if cfg.mode != "auto" else ("min" if lower_is_better(cfg.monitor) else "max")
        self.best_weights: dict[str, torch.Tensor] | None = None

    def update(self, state: LoopState, record: dict[str, Any], model: nn.Module) -> bool:
        """Record this epoch; True when training should stop."""
        if self.cfg.monitor not in record:
            logged = ", ".join(k for k in record if "/" in k)
            raise ConfigError(
                f"train.early_stopping.monitor: '{self.cfg.monitor}' is not logged; choose one of {logged}"
            )
        value = float(record[self.cfg.monitor])
        sign = 1.0 if self.mode == "max" else -1.0
        if state.best is None or (math.isfinite(value) and sign * (value - state.best) > self.cfg.min_delta):
            state.best, state.best_epoch, state.bad_epochs = value, record["epoch"], 0
            if self.cfg.restore_best:
                self.best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return False
        state.bad_epochs += 1
        state.stopped_early = state.bad_epochs >= self.cfg.patience
        state.stopped_by = "early_stopping" if state.stopped_early else ""
        return state.stopped_early


def logged_metrics(spec: Any, metrics: list[str], has_val: bool) -> list[str]:
    """The per-epoch keys the loop will log, e.g. train/loss, val/accuracy."""
    from torchkeel.tasks import task_of

    return task_of(spec).logged(metrics, has_val, spec)
