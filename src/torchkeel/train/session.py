"""The run folder around a training loop, the same for every loop (fit, the GAN's): a new
folder or the one being resumed, its lock, SIGINT/SIGTERM ending in a checkpoint, the
checkpoint to resume from, and no half-written folder left behind when a run fails before
its first checkpoint.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch

from torchkeel import atomic, runs
from torchkeel.config import RunConfig
from torchkeel.data import FITTED_SPEC
from torchkeel.data.bundle import DataSpec
from torchkeel.errors import RunError, StopRequested
from torchkeel.train import checkpoint as ckpt
from torchkeel.train import distributed as dist
from torchkeel.train import runtime
from torchkeel.train.signals import StopSignals


@contextmanager
def run_session(
    cfg: RunConfig, resume_dir: Path | None, device: torch.device, spec: DataSpec, say: Any
) -> Iterator[tuple[Path, ckpt.Checkpoint | None, StopSignals]]:
    """What every training loop runs inside: a new run folder (under DDP rank 0 makes it), or
    ``resume_dir``, locked against a second `--resume` of it, with SIGINT/SIGTERM ending in a
    checkpoint. Yields the folder, the checkpoint to resume from (None: from the start) and
    the StopSignals for the loop. However the block fails (any exception, KeyboardInterrupt
    included), a new folder with no checkpoint is removed before the failure goes on."""
    run_dir = resume_dir or dist.run_on_main(lambda: _start_run_folder(cfg, device, spec))
    say.detail(f"run folder {run_dir}")
    try:
        with runs.lock_run(run_dir) if dist.is_main() else nullcontext(), StopSignals() as stop:
            checkpoint = _resume_point(run_dir, say) if resume_dir is not None else None
            yield run_dir, checkpoint, stop
    except BaseException as e:  # any failure (MemoryError, a bug, a second Ctrl-C) before a checkpoint
        if resume_dir is None and dist.is_main() and not isinstance(e, StopRequested):  # a pruned trial stays
            _discard_if_empty(run_dir)
        raise


def _start_run_folder(cfg: RunConfig, device: torch.device, spec: DataSpec) -> Path:
    run_dir = runs.create_run(cfg.out_dir, cfg.name or f"{cfg.data.name}-{cfg.model.name}")
    with discarded_on_failure(run_dir):
        atomic.write_text(run_dir / "config.yaml", cfg.to_yaml())
        atomic.write_json(run_dir / "env.json", runtime.environment(device) | dist.environment())
        # the preprocessing learnt from train (tokeniser, column statistics): a resume reuses it
        atomic.write_json(run_dir / FITTED_SPEC, spec.to_dict())
    return run_dir


def _resume_point(run_dir: Path, say: Any) -> ckpt.Checkpoint | None:
    """The checkpoint to resume from; under DDP rank 0 picks it (and tidies the folder), and
    every rank reads that same file."""
    if not dist.active():
        return _checkpoint_to_resume(run_dir, say)
    chosen = dist.run_on_main(lambda: getattr(_checkpoint_to_resume(run_dir, say), "path", None))
    return ckpt.read_checkpoint(chosen) if chosen is not None else None


def _checkpoint_to_resume(run_dir: Path, say: Any) -> ckpt.Checkpoint | None:
    """The newest checkpoint of ``run_dir`` that verifies (damaged ones are reported and set
    aside), after clearing temporary files a killed write left; None: start from step 0."""
    if (run_dir / "summary.json").is_file():
        raise RunError(f"{run_dir.name} has finished (it has summary.json): nothing to resume")
    folder = run_dir / "checkpoint"
    stale = atomic.remove_stale_temp_files(run_dir) + atomic.remove_stale_temp_files(folder)
    if stale:
        say.detail(f"removed {len(stale)} half-written temporary file(s) left by the interrupted run")
    checkpoint = ckpt.newest_good_checkpoint(folder, report=say.warn)
    if checkpoint is None:
        say.detail(f"{run_dir.name} has no checkpoint yet: training it from the start with its saved config")
        return None
    position = f"epoch {checkpoint.state['epoch'] + 1}, step {checkpoint.state['global_step']}"
    say.detail(f"resuming {run_dir.name} from {checkpoint.path.name} ({position})")
    return checkpoint


@contextmanager
def discarded_on_failure(run_dir: Path) -> Iterator[None]:
    """However the block fails (any exception, KeyboardInterrupt included), a run folder
    without a checkpoint is removed before the failure goes on."""
    try:
        yield
    except BaseException:
        _discard_if_empty(run_dir)
        raise


def _discard_if_empty(run_dir: Path) -> None:
    """A run that failed before its first checkpoint has nothing worth keeping: its folder goes
    and ``latest`` points at the newest run left (README, "A run that fails or is interrupted")."""
    ckpt.wait_for_writes()  # a checkpoint still being written when training failed counts
    if not ckpt.list_checkpoints(run_dir / "checkpoint"):
        shutil.rmtree(run_dir, ignore_errors=True)
        runs.point_latest(run_dir.parent)
