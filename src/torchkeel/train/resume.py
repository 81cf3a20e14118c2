"""What the training loops (``fit``, ``fit_gan``) save and restore: when a checkpoint is due
and what goes into one, stopping with a checkpoint on SIGINT/SIGTERM, and resuming from a
checkpoint exactly where it was taken.

Under torch.distributed every rank keeps a saver: rank 0 writes the checkpoint, and every rank
hands it its RNG states first (one gather), so a resume restores each rank's own streams. The
gather needs all ranks at the same step, so decisions that depend on a clock or a signal (a
checkpoint every N minutes or at an epoch's end after ``min_seconds``; SIGINT/SIGTERM) are
agreed among the ranks at the loop's sync points: its log points (every ``train.log_every``
steps, where the host syncs anyway) and epoch ends. One process decides at every step.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from torchkeel.config import CheckpointConfig
from torchkeel.errors import ConfigError, RunError, TrainingInterrupted
from torchkeel.train import checkpoint as ckpt
from torchkeel.train import distributed as dist
from torchkeel.train.rng import rng_state
from torchkeel.train.signals import StopSignals
from torchkeel.train.state import EarlyStopping, LoopState


class Guard(Protocol):
    """What checks that the weights are finite before they are saved (``NonFiniteGuard``)."""

    def check(self, epoch: int, context: Callable[[], str]) -> object: ...


class Running(Protocol):
    """An epoch's running totals, saved in a mid-epoch checkpoint (``TrainMeter``)."""

    totals: torch.Tensor


class CheckpointSaver:
    """When a checkpoint is due, and what goes into one: weights, optimiser(s), RNGs (in
    checkpoint.snapshot), the loop state with early stopping and history, the best weights,
    the epoch's running totals when mid-epoch, and metrics.jsonl rewritten beside it.
    ``scaler`` (fp16) and ``stopper`` are None for loops without them."""

    def __init__(
        self,
        run_dir: Path,
        cfg: CheckpointConfig,
        model: nn.Module,
        optimizer: ckpt.Optimizers,
        scaler: Any,
        stopper: EarlyStopping | None,
        guard: Guard,
    ):
        self.run_dir, self.cfg = run_dir, cfg
        self.model, self.optimizer, self.scaler, self.stopper, self.guard = model, optimizer, scaler, stopper, guard
        # rank 0 alone writes the run folder
        self.writer = ckpt.CheckpointWriter(run_dir / "checkpoint", cfg.keep) if dist.is_main() else None
        self.saved_at: tuple[int, int] | None = None  # (epoch, batch) of the last checkpoint
        self._last = time.monotonic()  # training start counts as the last checkpoint

    def due(self, state: LoopState, epoch_end: bool = False, final: bool = False, sync_point: bool = True) -> bool:
        """Every ``every_steps`` steps and every ``every_minutes``; at the end of every
        ``every_epochs``-th epoch unless one was written less than ``min_seconds`` ago (on 2
        CPU cores a background write still costs ~7% of a tiny model's epoch, so short runs
        should not checkpoint every epoch); after the last epoch always. Under DDP the clock's
        answer is agreed among the ranks, at ``sync_point``s and epoch ends only."""
        c = self.cfg
        if final or (c.every_steps and state.global_step % c.every_steps == 0):
            return True
        if dist.active() and not (sync_point or epoch_end):
            return False
        since_last = time.monotonic() - self._last
        timely = bool(c.every_minutes and since_last >= 60 * c.every_minutes)
        timely |= epoch_end and state.epoch % c.every_epochs == 0 and since_last >= c.min_seconds
        return dist.agree(timely)

    def save(self, state: LoopState, running: Running | None = None) -> None:
        self.guard.check(state.epoch, lambda: last_checkpoint_note(self))  # never save non-finite weights
        ranks_rng = dist.gather_to_main(rng_state()) if dist.active() else None  # every rank's, on rank 0
        self.saved_at, self._last = (state.epoch, state.batch), time.monotonic()
        if self.writer is None:
            return
        if self.scaler is not None and self.scaler.is_enabled():
            state.scaler = self.scaler.state_dict()
        extra = {}
        if self.stopper is not None and self.stopper.best_weights is not None:
            extra |= {f"best.{k}": v for k, v in self.stopper.best_weights.items()}
        if running is not None and state.batch > 0:
            extra["meter.totals"] = running.totals
        lines = sorted([*state.steps, *state.history], key=lambda r: (r["step"], "seconds" in r))
        metrics = "".join(json.dumps(r) + "\n" for r in lines)
        files = {self.run_dir / "metrics.jsonl": metrics}
        self.writer.save(state.global_step, self.model, self.optimizer, state.to_dict(), extra, files, ranks_rng)

    def poll(self) -> None:
        """Raise a failed background write now (rank 0; a no-op elsewhere)."""
        if self.writer is not None:
            self.writer.poll()

    def close(self) -> None:
        """Wait for the write in flight (rank 0; a no-op elsewhere)."""
        if self.writer is not None:
            self.writer.close()


def stop_requested(stop: StopSignals | None, sync_point: bool = True) -> bool:
    """SIGINT/SIGTERM arrived: every step on one process; under DDP at sync points, where the
    ranks agree, so that all of them stop (and checkpoint) at the same step."""
    if stop is None:
        return False
    if not dist.active():
        return stop.received is not None
    return sync_point and dist.agree(stop.received is not None)


def past_deadline(deadline: float | None, sync_point: bool = True) -> bool:
    """train.max_time is up: checked every step on one process; under DDP at sync points, where
    the ranks agree, so that every rank ends the epoch at the same step."""
    if deadline is None:
        return False
    if not dist.active():
        return time.perf_counter() >= deadline
    return sync_point and dist.agree(time.perf_counter() >= deadline)


def stop_with_checkpoint(
    stop: StopSignals, saver: CheckpointSaver | None, state: LoopState, running: Running | None
) -> None:
    """SIGINT/SIGTERM arrived: checkpoint this exact position (unless just done), wait for the
    write (under DDP every rank waits for rank 0's), and end training with a message that says
    how to continue."""
    where = f"step {state.global_step} (epoch {state.epoch + 1})"
    signal = stop.name or "a signal to another process"  # DDP: the ranks stop together
    if saver is None:
        raise TrainingInterrupted(
            f"training stopped by {signal} at {where}; no run folder to checkpoint to", stop.exit_code
        )
    if saver.saved_at != (state.epoch, state.batch):
        saver.save(state, running)
    saver.close()
    dist.barrier()
    raise TrainingInterrupted(
        f"training stopped by {signal} at {where}; checkpoint written: continue with "
        f"`keel train --resume {saver.run_dir}`",
        stop.exit_code,
    )


def last_checkpoint_note(saver: CheckpointSaver | None) -> str:
    """For an error message: the newest checkpoint on disk, after letting one in flight land."""
    if saver is None or saver.writer is None:
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
    """Load a checkpoint into the model, optimiser(s), scaler, this rank's RNGs and early
    stopping (``scaler`` and ``stopper`` may be None); return the loop state and, when it was
    taken mid-epoch, that epoch's running totals."""
    checkpoint = resume if isinstance(resume, ckpt.Checkpoint) else find_checkpoint(Path(resume))
    raw_state, extra = ckpt.restore(checkpoint, model, optimizer, rank=dist.rank())
    state = LoopState.from_dict(raw_state)
    if state.steps_per_epoch not in (0, steps_per_epoch):
        raise ConfigError(
            f"{checkpoint.path.name} was taken with {state.steps_per_epoch} steps per epoch, this run has "
            f"{steps_per_epoch}: resume with the data and batch size the run was started with"
        )
    state.steps_per_epoch = steps_per_epoch
    if state.scaler and scaler is not None and scaler.is_enabled():
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
