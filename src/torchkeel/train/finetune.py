"""Transfer learning's second phase, as its own small function (not a flag on ``fit``).

Phase 1 is an ordinary ``fit`` of a model whose backbone is frozen (``freeze_backbone: true``):
only the new head learns. ``finetune`` then makes every parameter trainable and trains on
for ``train.finetune.epochs`` at the lower ``train.finetune.lr``, so the pretrained features
adapt a little without being overwritten (the Keras transfer-learning guide's recipe).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from torch import nn

from torchkeel.config import FinetuneConfig
from torchkeel.train import checkpoint as ckpt
from torchkeel.train.loop import Run, fit
from torchkeel.train.signals import StopSignals

PHASE_DIR = "finetune"  # the phase's metrics.jsonl and checkpoints, inside the run folder


def unfreeze(model: nn.Module) -> int:
    """Make every parameter trainable; return how many parameters were frozen."""
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    model.requires_grad_(True)
    return frozen


def finetune(
    run: Run,
    settings: FinetuneConfig,
    *,
    run_dir: Path | None = None,
    progress: bool = True,
    console: Console | None = None,
    stop: StopSignals | None = None,
) -> Run:
    """Unfreeze ``run.model`` and train it on ``run.data`` with ``settings``; every other
    setting (batch, optimiser, schedule, early stopping, seed) is the first phase's. With a
    ``run_dir`` the phase writes ``finetune/`` there and resumes from its last checkpoint."""
    phase = run.config.model_copy(deep=True)
    if phase.train.max_time is not None:  # train.max_time covers both phases
        if run.stopped_by == "max_time" or phase.train.max_time - run.train_seconds <= 0:
            return run
        phase.train.max_time -= run.train_seconds
    unfreeze(run.model)
    phase.train.epochs = settings.epochs
    phase.train.optimizer.lr = settings.lr
    phase.train.finetune = None
    folder = run_dir / PHASE_DIR if run_dir is not None else None
    resume = _last_checkpoint(folder)
    second = fit(
        run.model, run.data, phase, run_dir=folder, resume=resume, progress=progress, console=console, stop=stop
    )
    history: list[dict[str, Any]] = [*run.history, *({**r, "phase": "finetune"} for r in second.history)]
    return Run(
        run.model,
        run.data,
        run.config,
        history,
        run.train_seconds + second.train_seconds,
        run.path,
        second.stopped_early,
        stopped_by=second.stopped_by,
    )


def _last_checkpoint(folder: Path | None) -> ckpt.Checkpoint | None:
    """The phase's newest checkpoint that verifies (damaged ones set aside), if any."""
    return ckpt.newest_good_checkpoint(folder / "checkpoint") if folder is not None else None
