"""fit(): the one supervised training loop, readable top to bottom.

Per step: set the learning rate, (augment), forward, loss, backward (summed over
``train.accumulate`` micro-batches), (clip), NaN/inf watch,
optimiser step, accumulate metrics on the device; a checkpoint when one is due (every N steps
or minutes) or when SIGINT/SIGTERM asked to stop. Every ``log_every`` steps one host sync
checks the loss and gradients and updates the progress bar; every epoch: evaluate on val, log,
early-stop check, checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn

from torchkeel.config import RunConfig, TrainConfig, validate_config
from torchkeel.data import augment as aug
from torchkeel.data.bundle import DataBundle
from torchkeel.data.stream import make_loader
from torchkeel.errors import ConfigError, EndTraining, unknown_choice
from torchkeel.evaluate.metrics import evaluate
from torchkeel.evaluate.tta import check_tta
from torchkeel.models.layers import fit_to_data
from torchkeel.tasks import task_of
from torchkeel.tasks.meter import TrainMeter
from torchkeel.train import checkpoint as ckpt
from torchkeel.train import distributed as dist
from torchkeel.train import runtime, threads
from torchkeel.train.accumulate import Accumulated, forward_backward
from torchkeel.train.guard import NonFiniteGuard
from torchkeel.train.loggers import Loggers, open_loggers
from torchkeel.train.lookahead import Lookahead
from torchkeel.train.losses import build_loss, class_weights, resolve_loss
from torchkeel.train.optim import build_optimizer, lr_factor, set_lr
from torchkeel.train.progress import TrainProgress
from torchkeel.train.resume import (
    CheckpointSaver,
    last_checkpoint_note,
    past_deadline,
    resume_from,
    stop_requested,
    stop_with_checkpoint,
)
from torchkeel.train.signals import StopSignals
from torchkeel.train.state import EarlyStopping, LoopState


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
    nan_skips: int = 0  # steps skipped for a non-finite loss or gradient (train.on_nan: skip)
    compile_seconds: float | None = None  # train.compile: the first step's time, compiling included
    validated: tuple[dict[str, float], list[int]] | None = None  # the last val metrics, weight versions then
    stopped_by: str = ""  # early_stopping, max_time or hook (an on_epoch EndTraining); "" ran every epoch

    def evaluate(self, split: str = "test", metrics: list[str] | None = None) -> dict[str, float]:
        if split == "test" and metrics is None and self._test_is_last_val():
            return dict(self.validated[0])
        part = self.data.splits().get(split)
        if part is None:
            raise ConfigError(f"no '{split}' split in this data (splits: {', '.join(self.data.splits())})")
        spec = self.data.spec
        loss = build_loss(resolve_loss(self.config.train.loss, spec), 0.0, spec=spec)
        names = metrics or self.config.eval.metrics
        return evaluate(
            self.model,
            part,
            self.data.spec,
            loss,
            names,
            self.config.eval.batch_size,
            self.config.eval.top_k,
            tta=self.config.eval.tta,
        )

    def _test_is_last_val(self) -> bool:
        """The test split is the val split (a corpus's held-out part), measured with the same
        loss, and the weights are those the last validation saw (no in-place change since: an
        optimiser step, restored best weights and Lookahead's average all bump a tensor's
        version): its numbers are the test numbers, not computed a second time."""
        return (
            self.validated is not None
            and self.data.test is self.data.val
            and self.config.train.label_smoothing == 0
            and weight_versions(self.model) == self.validated[1]
        )


def _val_reserve(last: float | None, epoch_start: float, samples: int, val: Any) -> float:
    """Seconds to keep for the validation that ends a cut epoch: the last one's time, or before
    the first, the epoch's time per training sample over the val split (an overestimate for most
    models, whose forward pass is a third of a step; not for a frozen encoder's, which is all of it)."""
    if val is None or (last is None and samples == 0):
        return 0.0
    if last is not None:
        return last
    return (time.perf_counter() - epoch_start) / samples * len(val)


def weight_versions(model: nn.Module) -> list[int]:
    return [p._version for p in model.parameters()]


def fit(
    model: nn.Module,
    data: DataBundle,
    config: RunConfig | None = None,
    *,
    run_dir: str | Path | None = None,
    resume: str | Path | ckpt.Checkpoint | None = None,
    progress: bool = True,
    console: Console | None = None,
    stop: StopSignals | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    **options: Any,
) -> Run:
    """Train ``model`` (any ``nn.Module``) on ``data`` and return a :class:`Run`.

    ``options`` are shortcuts over ``config``: any ``train`` key (``epochs=5``), optimiser
    keys (``optimizer="sgd", lr=0.05, momentum=0.9``), ``schedule="cosine"``, ``seed=1``,
    ``metrics=[...]``, ``augment={"crop": 2}``. With ``run_dir`` the loop writes
    metrics.jsonl and checkpoints there; ``resume`` is a checkpoint file (or a checkpoint
    folder: its newest good one) to continue from, exactly where it stopped. Inside
    ``with StopSignals() as stop`` pass ``stop=stop``: SIGINT/SIGTERM then end training after
    the current step with a checkpoint and a TrainingInterrupted error.
    ``on_epoch(record)`` is called after every epoch (once its checkpoint is written) with the
    epoch's metrics.jsonl record; an exception it raises stops training (``keel tune`` prunes
    trials this way).
    """
    cfg = fit_config(config, options)
    t = cfg.train
    runtime.set_allocator(t.allocator)
    runtime.set_deterministic(t.deterministic)
    runtime.seed_everything(dist.rank_seed(cfg.seed))  # DDP: one stream per rank; rank 0's is cfg.seed's
    device = dist.local_device(runtime.pick_device(t.device))  # DDP: this rank's GPU
    spec = data.spec
    task = task_of(spec)  # what the loop asks: the batch loss, the running metrics, what is logged
    loss_fn = build_loss(resolve_loss(t.loss, spec), t.label_smoothing, class_weights(spec, device), spec)
    forward_loss = task.forward_loss
    augment = aug.build_augment(cfg.data.augment, spec)  # None: no augmentation
    check_tta(cfg.eval.tta, spec.kind)
    if cfg.eval.tta != "none":
        task.require("tta", spec.name)  # mirrored views average class scores: not boxes

    data = replace(data, train=task.admit(model, data.train))  # CTC: clips too short for their words, left out
    model.to(device)
    fit_to_data(model, data.train)  # data-dependent init (airbench's whitening conv); loaded weights stay
    if t.channels_last:
        model.to(memory_format=torch.channels_last)
    forward = dist.wrap(model)  # DistributedDataParallel under `keel train --nproc N`, else the model
    forward = torch.compile(forward) if t.compile else forward
    # tensors, or streamed image files; under DDP each rank takes its share of the global batch
    # from its shard of the permutation
    loader = make_loader(data.train, device, dist.local_batch_size(t.batch_size), seed=cfg.seed, **dist.shard())
    if t.channels_last and getattr(loader, "x", None) is not None and loader.x.ndim == 4:
        # the images too, once: a channels_last model fed NCHW batches converts every batch in
        # every conv and ran no faster than plain NCHW (benchmarks/speed.py, workload 1)
        loader.x = loader.x.contiguous(memory_format=torch.channels_last)
    steps = Accumulated(loader, t.accumulate)  # batches per optimiser step: train.accumulate
    sample = _one_sample(data.train) if device.type == "cpu" and not dist.active() else None  # auto: CPU alone
    runtime.set_threads(threads.choose(t.threads, model, sample, t.batch_size))
    val = data.val.to(device) if data.val is not None and len(data.val) else None
    optimizer = build_optimizer(model, t.optimizer)
    scaler = torch.amp.GradScaler(device.type, enabled=t.precision == "fp16")
    steps_per_epoch = len(steps)
    total_steps = steps_per_epoch * t.epochs
    lookahead = Lookahead(t.lookahead, optimizer, total_steps) if t.lookahead else None
    logged = task.logged(cfg.eval.metrics, val is not None, spec)
    stopper = EarlyStopping(t.early_stopping, logged) if t.early_stopping else None
    guard = NonFiniteGuard(t.on_nan, model, check_grads=t.precision != "fp16")
    run_dir = Path(run_dir) if run_dir is not None else None
    # DDP: a saver on every rank (each hands rank 0 its RNG states); rank 0 alone writes
    saver = None
    if run_dir is not None:
        saver = CheckpointSaver(run_dir, t.checkpoint, model, optimizer, scaler, stopper, guard)
    state, meter_totals = LoopState(steps_per_epoch=steps_per_epoch), None
    if resume is not None:
        state, meter_totals = resume_from(resume, model, optimizer, scaler, stopper, steps_per_epoch)
    bar = TrainProgress(t.epochs, console, enabled=progress and dist.is_main())
    loggers = (
        open_loggers(cfg, run_dir, state.global_step) if dist.is_main() else Loggers([])
    )  # train.loggers: tensorboard/mlflow copies
    t_start = time.perf_counter()
    earlier = state.trained_seconds  # a resumed run: the time its earlier sessions trained
    # train.max_time counts every session of the run
    deadline = None if t.max_time is None else t_start + t.max_time - earlier
    val_seconds: float | None = None  # the last validation's time: train.max_time leaves room for the next
    compile_seconds = validated = None

    for epoch in range(state.epoch, t.epochs):
        if state.stopped_early:
            break
        model.train()
        running, out_of_time = task.train_meter(spec, device), False
        if meter_totals is not None:  # resumed mid-epoch: this epoch's running totals so far
            running.totals.copy_(meter_totals)
            meter_totals = None
        # the last step's lr: what the epoch record shows when a resume lands at the epoch's end
        lr = t.optimizer.lr * lr_factor(t.schedule, max(state.global_step - 1, 0), total_steps, steps_per_epoch)
        bar.start_epoch(epoch, steps_per_epoch, done=state.batch)
        epoch_start, first_batch = time.perf_counter(), state.batch
        for batch, micro in enumerate(steps.epoch(epoch, start=state.batch), start=state.batch):
            lr = t.optimizer.lr * lr_factor(t.schedule, state.global_step, total_steps, steps_per_epoch)
            set_lr(optimizer, lr)
            optimizer.zero_grad(set_to_none=True)
            # forward, loss, backward over the step's micro-batches (one unless train.accumulate)
            done, loss = forward_backward(micro, forward, forward_loss, loss_fn, augment, scaler, device, t.precision)
            grad_norm = None
            if t.grad_clip:
                scaler.unscale_(optimizer)
                grad_norm = nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
            if guard.watch(state.global_step + 1, loss, grad_norm):
                for out, y, micro_loss in done:
                    running.update(out, y, micro_loss)
            else:
                _skip_update(optimizer, state)
            scaler.step(optimizer)
            scaler.update()
            state.global_step += 1
            state.batch = batch + 1
            state.trained_seconds = earlier + time.perf_counter() - t_start
            if lookahead is not None:
                lookahead.step(state.global_step)
            if t.compile and compile_seconds is None:
                compile_seconds = time.perf_counter() - t_start
            at_log = state.batch % t.log_every == 0 or state.batch == steps_per_epoch
            if at_log:
                _log_step(state, bar, guard, running, lr, steps.batch_size, saver)
            if saver is not None and state.batch < steps_per_epoch and saver.due(state, sync_point=at_log):
                saver.save(state, running)
            if stop_requested(stop, sync_point=at_log):
                stop_with_checkpoint(stop, saver, state, running)
            if state.batch - first_batch == 1:  # the first step (warm-up, compiling) says nothing about the pace
                epoch_start = time.perf_counter()
            samples = (state.batch - first_batch - 1) * steps.batch_size
            if deadline is not None and past_deadline(
                deadline - min(_val_reserve(val_seconds, epoch_start, samples, val), t.max_time / 2),
                sync_point=at_log,
            ):
                out_of_time = True
                break  # the epoch ends here: validated, then the run ends

        train_metrics = dist.all_reduced(running).compute()  # summed over ranks under DDP
        state.trained_seconds = earlier + time.perf_counter() - t_start
        val_start = time.perf_counter()
        with task.validation(model):  # translation: greedy, not beam search
            val_metrics = _validate(model, val, spec, loss_fn, cfg) if val is not None else {}
        val_seconds = time.perf_counter() - val_start
        validated = (val_metrics, weight_versions(model)) if val_metrics else None
        seconds = bar.end_epoch(epoch, train_metrics, val_metrics, lr)
        record = {"epoch": epoch + 1, "step": state.global_step, "lr": lr, "seconds": seconds}
        record |= {f"train/{k}": v for k, v in train_metrics.items()}
        record |= {f"val/{k}": v for k, v in val_metrics.items()}
        if t.on_nan == "skip":
            record["train/nan_skips"] = state.nan_skips
        state.history.append(record)
        state.epoch, state.batch = epoch + 1, 0
        if stopper is not None and stopper.update(state, record, model):
            bar.message(
                f"early stopping: no {t.early_stopping.monitor} improvement for "
                f"{t.early_stopping.patience} epochs (best {state.best:.4f} at epoch {state.best_epoch})"
            )
        state.trained_seconds = earlier + time.perf_counter() - t_start  # the validation counts too
        if (out_of_time or past_deadline(deadline)) and not state.stopped_early:
            state.stopped_early, state.stopped_by = True, "max_time"
            bar.message(f"train.max_time: {t.max_time:g} s of training reached in epoch {epoch + 1}")
        final = state.epoch == t.epochs or state.stopped_early
        if saver is not None and saver.due(state, epoch_end=True, final=final):
            saver.save(state)
        if stop_requested(stop):
            stop_with_checkpoint(stop, saver, state, None)
        loggers.log_epoch(record, state.steps)
        if on_epoch is not None:
            try:
                on_epoch(record)
            except EndTraining as e:  # the hook ends the run as early stopping would
                bar.message(str(e))
                state.stopped_early, state.stopped_by = True, state.stopped_by or "hook"
                if saver is not None and not final:
                    saver.save(state)

    loggers.close()
    if saver is not None:
        saver.close()
    if lookahead is not None:
        lookahead.finish()  # the final weights are the average
    if stopper is not None and stopper.best_weights is not None:
        model.load_state_dict(stopper.best_weights)
    if stop is not None and stop.received:  # arrived after the last epoch's check (in on_epoch, say)
        stop_with_checkpoint(stop, saver, state, None)
    train_seconds = time.perf_counter() - t_start
    return Run(
        model,
        data,
        cfg,
        state.history,
        train_seconds,
        run_dir,
        state.stopped_early,
        state.nan_skips,
        compile_seconds,
        validated,
        state.stopped_by,
    )


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
    state: LoopState,
    bar: TrainProgress,
    guard: NonFiniteGuard,
    running: TrainMeter,
    lr: float,
    batch_size: int,
    saver: CheckpointSaver | None,
) -> None:
    """The host sync every ``log_every`` steps: NaN/inf check, a metrics.jsonl record, the bar,
    and a failed background checkpoint write surfaced now rather than at the next one."""
    values = guard.check(state.epoch, lambda: last_checkpoint_note(saver))
    if saver is not None:
        saver.poll()
    if values is None:  # every step since the last log point was skipped
        return
    record = {"step": state.global_step, "epoch": state.epoch + 1, "train/batch_loss": values.loss, "lr": lr}
    if values.grad_norm is not None:
        record["train/grad_norm"] = values.grad_norm
    state.steps.append(record)
    bar.update(state.batch, state.batch * batch_size, running.compute())


def _validate(model: nn.Module, val: Any, spec: Any, loss_fn: Any, cfg: RunConfig) -> dict[str, float]:
    # under DDP each rank evaluates a shard and the sums are all-reduced
    return dist.evaluate(
        model, val, spec, loss_fn, cfg.eval.metrics, cfg.eval.batch_size, cfg.eval.top_k, tta=cfg.eval.tta
    )


def _one_sample(split: Any) -> torch.Tensor | None:
    """The first training input as a batch of one, for ``train.threads: auto`` (None for a
    streamed split, which holds no tensor)."""
    x = getattr(split, "x", None)
    return x[:1] if isinstance(x, torch.Tensor) and len(x) else None


def _skip_update(optimizer: torch.optim.Optimizer, state: LoopState) -> None:
    """on_nan: skip. Without gradients the optimiser step that follows changes nothing (torch
    optimisers pass over parameters whose .grad is None), so the loop stays one code path."""
    optimizer.zero_grad(set_to_none=True)
    state.nan_skips += 1
