"""The six steps of a training run from a config, narrated: what ``keel train`` runs.

1 preprocess, 2 design, 3-5 forward / loss / backward+update (``fit``), 6 evaluate; then the
run folder gets the model, its metadata and a summary.
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from torch import nn

from torchkeel import __version__, atomic, runs
from torchkeel.config import RunConfig, validate_config
from torchkeel.data import FITTED_SPEC, DataBundle, fitted_spec, load
from torchkeel.data.bundle import DataSpec, Split
from torchkeel.errors import KeelError, RunError
from torchkeel.evaluate.workflow import after_training
from torchkeel.memory import allocation_errors
from torchkeel.models import GAN_MODELS, build, count_parameters
from torchkeel.train import checkpoint as ckpt
from torchkeel.train import distributed as dist
from torchkeel.train import runtime
from torchkeel.train.footprint import check_images_fit, check_training_fits
from torchkeel.train.loop import Run, fit
from torchkeel.train.losses import resolve_loss
from torchkeel.train.signals import StopSignals


def train(
    cfg: RunConfig,
    console: Console,
    *,
    resume: str | None = None,
    progress: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> Path:
    """Run the whole workflow for ``cfg``; return the run folder. ``resume`` (a run folder,
    name or ``latest``) continues that run with its own saved config from its newest good
    checkpoint, or from the start when it has none yet. ``on_epoch`` goes to :func:`fit`
    (``keel tune`` prunes trials with it)."""
    say = _Narrator(console)
    if resume is not None:
        run_dir = runs.resolve_run(resume, cfg.out_dir)
        cfg = load_run_config(run_dir)
    device = runtime.pick_device(cfg.train.device)  # fail before anything is written
    check_images_fit(cfg, device)  # before a slow decoding pass over an image folder
    say.step("1/6", "Preprocess", f"loading '{cfg.data.name}'")
    data = prepare_data(cfg, fitted_spec(run_dir) if resume is not None else None)
    say.detail(data.summary())
    if data.spec.mean is not None and data.spec.kind == "image":
        say.detail(f"normalised per channel with train-split mean {_fmt(data.spec.mean)}, std {_fmt(data.spec.std)}")

    train_batch = min(dist.local_batch_size(cfg.train.batch_size), len(data.train) if data.train is not None else 1)
    check_training_fits(cfg, data, device, train_batch)  # on the meta device: before anything is allocated
    runtime.seed_everything(cfg.seed)  # the model's initial weights depend on the seed
    with allocation_errors("building the model"):
        model = build(cfg.model, data.spec)
    n_params = count_parameters(model)
    say.step("2/6", "Design", f"{cfg.model.name}: {n_params:,} parameters")
    if cfg.model.init_from and resume is None:
        _init_weights(model, cfg.model.init_from, say)
    if cfg.model.name in GAN_MODELS:  # a GAN trains by its own loop (train/gan.py)
        if resume is not None:
            raise RunError("GAN runs cannot be resumed; start the run again")
        from torchkeel.train.gan import train_gan_experiment

        return train_gan_experiment(cfg, data, model, say, console, progress)

    t = cfg.train
    say.step(
        "3-5/6",
        "Train",
        f"forward -> {resolve_loss(t.loss, data.spec)} loss -> backward -> {t.optimizer.name} step; "
        f"lr {t.optimizer.lr:g} ({t.schedule.name}), batch {t.batch_size}, {t.epochs} epochs on {device}",
    )
    if dist.active():
        say.detail(dist.describe(t.batch_size))
    if resume is None:
        run_dir = dist.run_on_main(lambda: _start_run_folder(cfg, device, data.spec))  # DDP: rank 0 makes it
    say.detail(f"run folder {run_dir}")
    try:
        # the lock keeps a second `--resume` of this run out; SIGINT/SIGTERM end with a checkpoint
        lock = runs.lock_run(run_dir) if dist.is_main() else nullcontext()
        with lock, StopSignals() as stop, allocation_errors("training"):
            checkpoint = _resume_point(run_dir, say) if resume is not None else None
            if resume is not None and checkpoint is None and cfg.model.init_from:
                _init_weights(model, cfg.model.init_from, say)
            run = fit(
                model,
                data,
                cfg,
                run_dir=run_dir,
                resume=checkpoint,
                console=console,
                progress=progress,
                stop=stop,
                on_epoch=on_epoch,
            )
            if cfg.train.finetune is not None:
                run = _finetune(run, cfg, run_dir, say, console, progress, stop)
    except KeelError:
        if resume is None and dist.is_main():
            _discard_if_empty(run_dir)
        raise

    say.step("6/6", "Evaluate", "test split")
    test = run.evaluate("test")
    if not dist.is_main():
        return run_dir  # DDP: rank 0 alone writes the model and the summary
    save_model(run_dir, run.model, cfg, data.spec)
    summary = {
        "test": test,
        "epochs": len(run.history),
        "stopped_early": run.stopped_early,
        "train_seconds": run.train_seconds,
        "parameters": n_params,
        "samples_per_second": _throughput(run),
        "nan_skips": run.nan_skips,
        "data": cfg.data.name,
        "model": cfg.model.name,
    }
    if run.compile_seconds is not None:  # train.compile: the first step, tracing and compiling included
        summary["compile_seconds"] = run.compile_seconds
    atomic.write_json(run_dir / "summary.json", summary)
    after_training(run_dir, cfg, run.model, data, summary, say.detail, console)  # attacks, report.html, loggers
    console.print(result_table(test, summary, run_dir))
    return run_dir


def _start_run_folder(cfg: RunConfig, device: torch.device, spec: DataSpec) -> Path:
    run_dir = runs.create_run(cfg.out_dir, cfg.name or f"{cfg.data.name}-{cfg.model.name}")
    atomic.write_text(run_dir / "config.yaml", cfg.to_yaml())
    atomic.write_json(run_dir / "env.json", runtime.environment(device) | dist.environment())
    # the preprocessing learnt from train (tokeniser, column statistics): a resume reuses it
    atomic.write_json(run_dir / FITTED_SPEC, spec.to_dict())
    return run_dir


def prepare_data(cfg: RunConfig, fitted: DataSpec | None = None) -> DataBundle:
    """Load the data set; with ``loss: bce`` a two-class problem becomes one sigmoid logit.
    ``fitted``: a trained run's DataSpec, whose tokeniser a rebuilt text set reuses."""
    data = load(cfg.data, cfg.seed, fitted)
    if cfg.train.loss == "bce" and data.spec.task == "classification" and data.spec.num_classes == 2:
        data.spec.task = "binary"
        as_float = {k: Split(v.x, v.y.float()) for k, v in data.splits().items()}
        data = DataBundle(data.spec, as_float["train"], as_float.get("val"), as_float["test"])
    resolve_loss(cfg.train.loss, data.spec)  # a loss that cannot fit the task fails here
    return data


def save_model(run_dir: Path, model: nn.Module, cfg: RunConfig, spec: DataSpec, loss: str | None = None) -> None:
    """model.safetensors (weights) and model.json (enough to rebuild it without the data);
    ``loss`` overrides the supervised loss recorded (a GAN's is "adversarial")."""
    weights = ckpt.saveable(model.state_dict())
    atomic.write_bytes(run_dir / "model.safetensors", safetensors.torch.save(weights))
    meta = {
        "format": "torchkeel-model-1",
        "torchkeel": __version__,
        # init_from only seeded training; this file's weights replace it
        "model": cfg.model.model_dump(mode="json", exclude={"init_from"}),
        "spec": spec.to_dict(),
        "loss": loss or resolve_loss(cfg.train.loss, spec),
    }
    atomic.write_json(run_dir / "model.json", meta)


def load_model(run_dir: Path, device: str | torch.device = "cpu") -> tuple[nn.Module, DataSpec, dict[str, Any]]:
    """Rebuild a trained model from model.json and model.safetensors alone."""
    meta_file, weights_file = run_dir / "model.json", run_dir / "model.safetensors"
    if not meta_file.is_file() or not weights_file.is_file():
        raise RunError(
            f"{run_dir.name} has no trained model: the run did not finish "
            f"(continue it with `keel train --resume {run_dir}`)"
        )
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        spec = DataSpec.from_dict(meta["spec"])
        _check_weights_fit(meta["model"], spec, weights_file)
        model = build(meta["model"], spec)
        model.load_state_dict(safetensors.torch.load_file(str(weights_file), device=str(device)))
    except RunError:
        raise
    except Exception as e:  # a damaged or edited file: JSON, key, type, shape and safetensors errors
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise RunError(
            f"{run_dir.name}: model.json or model.safetensors is damaged ({type(e).__name__}: {first})"
        ) from None
    return model.to(device).eval(), spec, meta


def _check_weights_fit(model_cfg: dict[str, Any], spec: DataSpec, weights_file: Path) -> None:
    """Compare the model's tensor shapes, built on the meta device (no memory), with those in
    the weights file's header before building it for real: an edited model.json cannot make
    loading allocate more than the weights file holds."""
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "initializing zero-element tensors": nothing is allocated here
        skeleton = build(model_cfg, spec)
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    with safetensors.safe_open(str(weights_file), framework="pt") as f:
        stored = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    if stored != expected:
        differ = sorted(k for k in expected.keys() | stored.keys() if expected.get(k) != stored.get(k))
        raise RunError(
            f"{weights_file.parent.name}: model.json and model.safetensors disagree on {', '.join(differ[:3])}"
        )


def refuse_gan(meta: dict[str, Any], run_dir: Path, action: str) -> None:
    """GAN runs generate rather than predict: point ``action`` (predict, serve, export) at
    ``keel sample``, the way to use them."""
    if meta.get("model", {}).get("name") in GAN_MODELS:
        raise RunError(f"{run_dir.name} is a GAN run: it cannot {action}; draw images with `keel sample {run_dir}`")


def load_run_config(run_dir: Path) -> RunConfig:
    from torchkeel.config import read_yaml

    return validate_config(read_yaml(run_dir / "config.yaml"))


def evaluate_run(run_dir: Path, split: str = "test") -> dict[str, float]:
    """Re-evaluate a finished run on a split rebuilt from its own config and seed."""
    from torchkeel.evaluate.metrics import evaluate
    from torchkeel.train.losses import build_loss

    cfg = load_run_config(run_dir)
    if cfg.model.name in GAN_MODELS:
        raise RunError(f"{run_dir.name} is a GAN run: its Frechet distances are in summary.json and metrics.jsonl")
    model, spec, meta = load_model(run_dir, runtime.pick_device(cfg.train.device))
    data = prepare_data(cfg, spec)
    part = data.splits().get(split)
    if part is None:
        raise RunError(f"this run's data has no '{split}' split (splits: {', '.join(data.splits())})")
    loss = build_loss(meta["loss"])
    return evaluate(model, part, spec, loss, cfg.eval.metrics, cfg.eval.batch_size, cfg.eval.top_k, tta=cfg.eval.tta)


def _finetune(
    run: Run, cfg: RunConfig, run_dir: Path, say: _Narrator, console: Console, progress: bool, stop: StopSignals
) -> Run:
    """Transfer learning's second phase (train/finetune.py): everything trainable, lower lr."""
    from torchkeel.train.finetune import finetune

    settings = cfg.train.finetune
    frozen = sum(p.numel() for p in run.model.parameters() if not p.requires_grad)
    say.detail(f"finetune: unfreezing {frozen:,} parameters; {settings.epochs} more epochs at lr {settings.lr:g}")
    return finetune(run, settings, run_dir=run_dir, progress=progress, console=console, stop=stop)


def _resume_point(run_dir: Path, say: _Narrator) -> ckpt.Checkpoint | None:
    """The checkpoint to resume from; under DDP rank 0 picks it (and tidies the folder), and
    every rank reads that same file."""
    if not dist.active():
        return _checkpoint_to_resume(run_dir, say)
    chosen = dist.run_on_main(lambda: getattr(_checkpoint_to_resume(run_dir, say), "path", None))
    return ckpt.read_checkpoint(chosen) if chosen is not None else None


def _checkpoint_to_resume(run_dir: Path, say: _Narrator) -> ckpt.Checkpoint | None:
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


def _init_weights(model: nn.Module, path: str, say: _Narrator) -> None:
    from torchkeel.weights import load_weights

    count = load_weights(model, path)
    say.detail(f"initial weights from {path} ({count} tensors)")


def result_table(test: dict[str, float], summary: dict[str, Any], run_dir: Path) -> Table:
    table = Table(title="Result", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in test.items():
        table.add_row(f"test {key}", f"{value:.4f}")
    table.add_row("train time", f"{summary['train_seconds']:.1f} s ({summary['epochs']} epochs)")
    table.add_row("parameters", f"{summary['parameters']:,}")
    table.add_row("run folder", str(run_dir))
    return table


class _Narrator:
    def __init__(self, console: Console):
        self.console = console

    def step(self, number: str, name: str, text: str) -> None:
        self.console.print(f"[bold cyan][{number}] {name}[/]  {text}", highlight=False)

    def detail(self, text: str) -> None:
        self.console.print(f"       {text}", highlight=False)

    def warn(self, text: str) -> None:
        self.console.print(f"       [bold yellow]warning:[/] {escape(text)}", highlight=False)


def _discard_if_empty(run_dir: Path) -> None:
    """A run that failed before its first checkpoint has nothing worth keeping."""
    if not ckpt.list_checkpoints(run_dir / "checkpoint"):
        shutil.rmtree(run_dir, ignore_errors=True)
        runs.point_latest(run_dir.parent)


def _throughput(run: Run) -> float:
    seconds = sum(r["seconds"] for r in run.history)
    return len(run.data.train) * len(run.history) / max(seconds, 1e-9)


def _fmt(values: list[float] | None) -> str:
    return "[" + ", ".join(f"{v:.3f}" for v in (values or [])) + "]"
