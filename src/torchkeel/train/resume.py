"""What ``fit`` saves and restores: when a checkpoint is due and what goes into one, stopping
with a checkpoint on SIGINT/SIGTERM, and resuming from a checkpoint exactly where it was taken.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchkeel.config import CheckpointConfig
from torchkeel.errors import ConfigError, RunError, TrainingInterrupted
from torchkeel.tasks.meter import TrainMeter
from torchkeel.train import checkpoint as ckpt
from torchkeel.train.guard import NonFiniteGuard
from torchkeel.train.signals import StopSignals
from torchkeel.train.state import EarlyStopping, LoopState


class CheckpointSaver:
    """When a checkpoint is due, and what goes into one: weights, optimiser, RNGs (in
    checkpoint.snapshot), the loop state with early stopping and history, the best weights,
    the epoch's running train metrics when mid-epoch, and metrics.jsonl rewritten beside it."""

    def __init__(
        self,
        run_dir: Path,
        cfg: CheckpointConfig,
        model: nn.Module,
        optimizer: Any,
        scaler: Any,
        stopper: EarlyStopping | None,
        guard: NonFiniteGuard,
    ):
        self.run_dir, self.cfg = run_dir, cfg
        self.model, self.optimizer, self.scaler, self.stopper, self.guard = model, optimizer, scaler, stopper, guard
        self.writer = ckpt.CheckpointWriter(run_dir / "checkpoint", cfg.keep)
        self.saved_at: tuple[int, int] | None = None  # (epoch, batch) of the last checkpoint

    def due(self, state: LoopState, epoch_end: bool = False, final: bool = False) -> bool:
        """Every ``every_steps`` steps and every ``every_minutes``; at the end of every
        ``every_epochs``-th epoch unless one was written less than ``min_seconds`` ago (on 2
        CPU cores a background write still costs ~7% of a tiny model's epoch, so short runs
        should not checkpoint every epoch); after the last epoch always."""
        c, since_last = self.cfg, self.writer.seconds_since_last()
        if final or (c.every_steps and state.global_step % c.every_steps == 0):
            return True
        if c.every_minutes and since_last >= 60 * c.every_minutes:
            return True
        return epoch_end and state.epoch % c.every_epochs == 0 and since_last >= c.min_seconds

    def save(self, state: LoopState, running: TrainMeter | None = None) -> None:
        self.guard.check(state.epoch, lambda: last_checkpoint_note(self))  # never save non-finite weights
        if self.scaler.is_enabled():
            state.scaler = self.scaler.state_dict()
        extra = {}
        if self.stopper is not None and self.stopper.best_weights is not None:
            extra |= {f"best.{k}": v for k, v in self.stopper.best_weights.items()}
        if running is not None and state.batch > 0:
            extra["meter.totals"] = running.totals
        lines = sorted([*state.steps, *state.history], key=lambda r: (r["step"], "seconds" in r))
        metrics = "".join(json.dumps(r) + "\n" for r in lines)
        files = {self.run_dir / "metrics.jsonl": metrics}
        self.writer.save(state.global_step, self.model, self.optimizer, state.to_dict(), extra, files)
        self.saved_at = (state.epoch, state.batch)


def stop_with_checkpoint(
    stop: StopSignals, saver: CheckpointSaver | None, state: LoopState, running: TrainMeter | None
) -> None:
    """SIGINT/SIGTERM arrived: checkpoint this exact position (unless just done), wait for the
    write, and end training with a message that says how to continue."""
    where = f"step {state.global_step} (epoch {state.epoch + 1})"
    if saver is None:
        raise TrainingInterrupted(
            f"training stopped by {stop.name} at {where}; no run folder to checkpoint to", stop.exit_code
        )
    if saver.saved_at != (state.epoch, state.batch):
        saver.save(state, running)
    saver.writer.close()
    raise TrainingInterrupted(
        f"training stopped by {stop.name} at {where}; checkpoint written: continue with "
        f"`keel train --resume {saver.run_dir}`",
        stop.exit_code,
    )


def last_checkpoint_note(saver: CheckpointSaver | None) -> str:
    """For an error message: the newest checkpoint on disk, after letting one in flight land."""
    if saver is None:
        return ""
    with contextlib.suppress(Exception):  # a failed write leaves the previous checkpoint, named below
        saver.writer.wait()
    found = ckpt.list_checkpoints(saver.writer.folder)
    if not found:
        return "; no checkpoint had been written yet"
    return f"; the last good checkpoint, {found[-1].name}, is kept in {saver.writer.folder}"


def resume_from(
    resume: str | Path | ckpt.Checkpoint,
    model: nn.Module,
    optimizer: Any,
    scaler: Any,
    stopper: EarlyStopping | None,
    steps_per_epoch: int,
) -> tuple[LoopState, torch.Tensor | None]:
    """Load a checkpoint into the model, optimiser, scaler, RNGs and early stopping; return the
    loop state and, when it was taken mid-epoch, that epoch's running train-metric totals."""
    checkpoint = resume if isinstance(resume, ckpt.Checkpoint) else find_checkpoint(Path(resume))
    raw_state, extra = ckpt.restore(checkpoint, model, optimizer)
    state = LoopState.from_dict(raw_state)
    if state.steps_per_epoch not in (0, steps_per_epoch):
        raise ConfigError(
            f"{checkpoint.path.name} was taken with {state.steps_per_epoch} steps per epoch, this run has "
            f"{steps_per_epoch}: resume with the data and batch size the run was started with"
        )
    state.steps_per_epoch = steps_per_epoch
    if state.scaler and scaler.is_enabled():
        scaler.load_state_dict(state.scaler)
    best = {k.removeprefix("best."): v for k, v in extra.items() if k.startswith("best.")}
    if stopper is not None and best:
        device = next(model.parameters()).device
        stopper.best_weights = {k: v.to(device) for k, v in best.items()}
    return state, extra.get("meter.totals")


def find_checkpoint(path: Path) -> ckpt.Checkpoint:
    """A checkpoint file, verified; or the newest good one in a checkpoint folder."""
    if not path.is_dir():
        return ckpt.read_checkpoint(path)
    found = ckpt.newest_good_checkpoint(path)
    if found is None:
        raise RunError(f"no usable checkpoint in {path}")
    return found
