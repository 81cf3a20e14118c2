"""fit(): the one supervised training loop, readable top to bottom.

Per step: set the learning rate, (augment), forward, loss, backward, (clip), optimiser step,
accumulate metrics on the device. Every ``log_every`` steps one host sync updates the progress
bar; every epoch: evaluate on val, log, early-stop check, checkpoint.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn

from torchkeel.config import RunConfig, TrainConfig, validate_config
from torchkeel.data import augment as aug
from torchkeel.data.bundle import DataBundle
from torchkeel.data.loader import TensorLoader
from torchkeel.errors import ConfigError, TrainingError, unknown_choice
from torchkeel.evaluate.metrics import TrainMeter, evaluate
from torchkeel.train import checkpoint as ckpt
from torchkeel.train import distributed as dist
from torchkeel.train import runtime
from torchkeel.train.losses import build_loss, resolve_loss
from torchkeel.train.optim import build_optimizer, lr_factor, set_lr
from torchkeel.train.progress import TrainProgress
from torchkeel.train.state import EarlyStopping, LoopState, logged_metrics


@dataclass
class Run:
    """The result of :func:`fit`: the trained model (best weights when early stopping
    restored them), its data, the resolved config and the per-epoch history."""

    model: nn.Module
    data: DataBundle
    config: RunConfig
    history: list[dict[str, Any]]
    train_seconds: float
    path: Path | None = None
    stopped_early: bool = False

    def evaluate(self, split: str = "test", metrics: list[str] | None = None) -> dict[str, float]:
        part = self.data.splits().get(split)
        if part is None:
            raise ConfigError(f"no '{split}' split in this data (splits: {', '.join(self.data.splits())})")
        loss = build_loss(resolve_loss(self.config.train.loss, self.data.spec), 0.0)
        names = metrics or self.config.eval.metrics
        return evaluate(
            self.model, part, self.data.spec, loss, names, self.config.eval.batch_size, self.config.eval.top_k
        )


def fit(
    model: nn.Module,
    data: DataBundle,
    config: RunConfig | None = None,
    *,
    run_dir: str | Path | None = None,
    resume: str | Path | None = None,
    progress: bool = True,
    console: Console | None = None,
    **options: Any,
) -> Run:
    """Train ``model`` (any ``nn.Module``) on ``data`` and return a :class:`Run`.

    ``options`` are shortcuts over ``config``: any ``train`` key (``epochs=5``), optimiser
    keys (``optimizer="sgd", lr=0.05, momentum=0.9``), ``schedule="cosine"``, ``seed=1``,
    ``metrics=[...]``, ``augment={"crop": 2}``. With ``run_dir`` the loop writes
    metrics.jsonl and checkpoints there; ``resume`` is a checkpoint file to continue from.
    """
    cfg = fit_config(config, options)
    t = cfg.train
    runtime.set_threads(t.threads)
    runtime.seed_everything(cfg.seed)
    device = dist.local_device(runtime.pick_device(t.device))  # DDP: this rank's GPU
    spec = data.spec
    loss_fn = build_loss(resolve_loss(t.loss, spec), t.label_smoothing)
    augment = aug.is_active(cfg.data.augment) and spec.kind == "image"

    model.to(device)
    if t.channels_last:
        model.to(memory_format=torch.channels_last)
    forward = dist.wrap(model)  # DistributedDataParallel under `keel train --nproc N`, else the model
    forward = torch.compile(forward) if t.compile else forward
    # DDP: each rank takes its share of the global batch from its shard of the permutation
    x_train, y_train = data.train.x.to(device), data.train.y.to(device)
    loader = TensorLoader(x_train, y_train, dist.local_batch_size(t.batch_size), seed=cfg.seed, **dist.shard())
    val = data.val.to(device) if data.val is not None and len(data.val) else None
    optimizer = build_optimizer(model, t.optimizer)
    scaler = torch.amp.GradScaler(device.type, enabled=t.precision == "fp16")
    steps_per_epoch = len(loader)
    total_steps = steps_per_epoch * t.epochs
    logged = logged_metrics(spec.task, cfg.eval.metrics, val is not None)
    stopper = EarlyStopping(t.early_stopping, logged) if t.early_stopping else None
    run_dir = Path(run_dir) if run_dir is not None else None
    writes = run_dir is not None and dist.is_main()  # one writer of the run folder: rank 0
    writer = ckpt.CheckpointWriter(run_dir / "checkpoint", t.checkpoint.keep) if writes else None
    state = LoopState()
    if resume is not None:
        state = _resume(Path(resume), model, optimizer, stopper)
    bar = TrainProgress(t.epochs, console, enabled=progress and dist.is_main())
    t_start = time.perf_counter()

    for epoch in range(state.epoch, t.epochs):
        if state.stopped_early:
            break
        model.train()
        running = TrainMeter(spec, device)
        bar.start_epoch(epoch, steps_per_epoch, done=state.batch)
        for batch, (x, y) in enumerate(loader.epoch(epoch, start=state.batch), start=state.batch):
            lr = t.optimizer.lr * lr_factor(t.schedule, state.global_step, total_steps, steps_per_epoch)
            set_lr(optimizer, lr)
            if augment:
                x = aug.augment(x, cfg.data.augment)
            with runtime.autocast(device, t.precision):
                out = forward(x)  # (B, output_size)
                loss = loss_fn(out, y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if t.grad_clip:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            running.update(out, y, loss)
            state.global_step += 1
            state.batch = batch + 1
            if state.batch % t.log_every == 0 or state.batch == steps_per_epoch:
                _log_step(state, bar, loss, running, lr, loader.batch_size)

        train_metrics = dist.all_reduced(running).compute()  # summed over ranks under DDP
        val_metrics = _validate(model, val, spec, loss_fn, cfg) if val is not None else {}
        seconds = bar.end_epoch(epoch, train_metrics, val_metrics, lr)
        record = {"epoch": epoch + 1, "step": state.global_step, "lr": lr, "seconds": seconds}
        record |= {f"train/{k}": v for k, v in train_metrics.items()}
        record |= {f"val/{k}": v for k, v in val_metrics.items()}
        state.history.append(record)
        state.epoch, state.batch = epoch + 1, 0
        if stopper is not None and stopper.update(state, record, model):
            bar.message(
                f"early stopping: no {t.early_stopping.monitor} improvement for "
                f"{t.early_stopping.patience} epochs (best {state.best:.4f} at epoch {state.best_epoch})"
            )
        if writer is not None and _checkpoint_due(t, state, writer):
            _save(writer, run_dir, model, optimizer, state, stopper)

    if writer is not None:
        writer.close()
    if stopper is not None and stopper.best_weights is not None:
        model.load_state_dict(stopper.best_weights)
    train_seconds = time.perf_counter() - t_start
    return Run(model, data, cfg, state.history, train_seconds, run_dir, state.stopped_early)


def fit_config(config: RunConfig | TrainConfig | None, options: dict[str, Any]) -> RunConfig:
    """Merge keyword shortcuts into a RunConfig (validated; unknown keys suggest the closest)."""
    if isinstance(config, TrainConfig):
        config = RunConfig(train=config)
    raw = (config or RunConfig()).to_dict()
    optimizer_keys = raw["train"]["optimizer"].keys() - {"name"}
    for key, value in options.items():
        if key in ("seed", "name", "out_dir"):
            raw[key] = value
        elif key == "metrics":
            raw["eval"]["metrics"] = value
        elif key == "augment":
            raw["data"]["augment"] = value
        elif key in ("optimizer", "schedule") and isinstance(value, str):
            raw["train"][key]["name"] = value
        elif key in optimizer_keys:
            raw["train"]["optimizer"][key] = value
        elif key in raw["train"]:
            raw["train"][key] = value
        else:
            choices = [*raw["train"], *optimizer_keys, "seed", "metrics", "augment"]
            raise ConfigError("fit(): " + unknown_choice("option", key, choices))
    return validate_config(raw)


def _log_step(
    state: LoopState, bar: TrainProgress, loss: torch.Tensor, running: TrainMeter, lr: float, batch_size: int
) -> None:
    """The host sync every ``log_every`` steps: NaN check, a metrics.jsonl record, the bar."""
    value = loss.item()
    if not math.isfinite(value):
        raise TrainingError(
            f"loss became {value} at step {state.global_step} (epoch {state.epoch + 1}): "
            "lower the learning rate, add grad_clip, or check the data for NaN/inf"
        )
    state.steps.append({"step": state.global_step, "epoch": state.epoch + 1, "train/batch_loss": value, "lr": lr})
    bar.update(state.batch, state.batch * batch_size, running.compute())


def _validate(model: nn.Module, val: Any, spec: Any, loss_fn: Any, cfg: RunConfig) -> dict[str, float]:
    # under DDP each rank evaluates a shard and the sums are all-reduced
    return dist.evaluate(model, val, spec, loss_fn, cfg.eval.metrics, cfg.eval.batch_size, cfg.eval.top_k)


def _checkpoint_due(t: TrainConfig, state: LoopState, writer: ckpt.CheckpointWriter) -> bool:
    """At the end of every ``every_epochs``-th epoch, unless one was written less than
    ``min_seconds`` ago; the final epoch always. On 2 CPU cores a background write still
    takes ~7% of a tiny model's epoch, so short runs should not checkpoint every epoch."""
    final = state.epoch == t.epochs or state.stopped_early
    if final:
        return True
    recent = writer.seconds_since_last() < t.checkpoint.min_seconds
    return state.epoch % t.checkpoint.every_epochs == 0 and not recent


def _save(
    writer: ckpt.CheckpointWriter, run_dir: Path, model: nn.Module, optimizer: Any, state: LoopState, stopper: Any
) -> None:
    """A checkpoint of everything needed to resume, and metrics.jsonl rewritten beside it."""
    lines = sorted([*state.steps, *state.history], key=lambda r: (r["step"], "seconds" in r))
    metrics = "".join(json.dumps(r) + "\n" for r in lines)
    extra = {f"best.{k}": v for k, v in stopper.best_weights.items()} if stopper and stopper.best_weights else {}
    writer.save(state.global_step, model, optimizer, state.to_dict(), extra, {run_dir / "metrics.jsonl": metrics})


def _resume(path: Path, model: nn.Module, optimizer: Any, stopper: EarlyStopping | None) -> LoopState:
    raw_state, extra = ckpt.load_checkpoint(path, model, optimizer)
    best = {k.removeprefix("best."): v for k, v in extra.items() if k.startswith("best.")}
    if stopper is not None and best:
        device = next(model.parameters()).device
        stopper.best_weights = {k: v.to(device) for k, v in best.items()}
    return LoopState.from_dict(raw_state)
