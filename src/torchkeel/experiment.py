"""The six steps of a training run from a config, narrated: what ``keel train`` runs.

1 preprocess, 2 design, 3-5 forward / loss / backward+update (``fit``), 6 evaluate; then the
run folder gets the model, its metadata and a summary.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from torchkeel import __version__, atomic, runs
from torchkeel.config import RunConfig, validate_config
from torchkeel.data import DataBundle, load
from torchkeel.data.bundle import DataSpec, Split
from torchkeel.errors import KeelError, RunError
from torchkeel.models import build, count_parameters
from torchkeel.train import checkpoint as ckpt
from torchkeel.train import distributed as dist
from torchkeel.train import runtime
from torchkeel.train.loop import Run, fit
from torchkeel.train.losses import resolve_loss


def train(cfg: RunConfig, console: Console, *, resume: str | None = None, progress: bool = True) -> Path:
    """Run the whole workflow for ``cfg``; return the run folder."""
    device = runtime.pick_device(cfg.train.device)  # fail before anything is written
    say = _Narrator(console)
    if resume is not None:
        run_dir = runs.resolve_run(resume, cfg.out_dir)
        cfg = load_run_config(run_dir)
    say.step("1/6", "Preprocess", f"loading '{cfg.data.name}'")
    data = prepare_data(cfg)
    say.detail(data.summary())
    if data.spec.mean is not None and data.spec.kind == "image":
        say.detail(f"normalised per channel with train-split mean {_fmt(data.spec.mean)}, std {_fmt(data.spec.std)}")

    runtime.seed_everything(cfg.seed)  # the model's initial weights depend on the seed
    model = build(cfg.model, data.spec)
    n_params = count_parameters(model)
    say.step("2/6", "Design", f"{cfg.model.name}: {n_params:,} parameters")

    t = cfg.train
    say.step(
        "3-5/6",
        "Train",
        f"forward -> {resolve_loss(t.loss, data.spec)} loss -> backward -> {t.optimizer.name} step; "
        f"lr {t.optimizer.lr:g} ({t.schedule.name}), batch {t.batch_size}, {t.epochs} epochs on {device}",
    )
    if dist.active():
        say.detail(dist.describe(t.batch_size))
    checkpoint = None
    if resume is None:
        run_dir = dist.run_on_main(lambda: _start_run_folder(cfg, device))  # DDP: rank 0 makes it
    else:
        checkpoint = latest_checkpoint(run_dir)
        say.detail(f"resuming {run_dir.name} from {checkpoint.name}")
    say.detail(f"run folder {run_dir}")
    try:
        run = fit(model, data, cfg, run_dir=run_dir, resume=checkpoint, console=console, progress=progress)
    except KeelError:
        if dist.is_main():
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
        "data": cfg.data.name,
        "model": cfg.model.name,
    }
    atomic.write_json(run_dir / "summary.json", summary)
    console.print(result_table(test, summary, run_dir))
    return run_dir


def _start_run_folder(cfg: RunConfig, device: torch.device) -> Path:
    run_dir = runs.create_run(cfg.out_dir, cfg.name or f"{cfg.data.name}-{cfg.model.name}")
    atomic.write_text(run_dir / "config.yaml", cfg.to_yaml())
    atomic.write_json(run_dir / "env.json", runtime.environment(device) | dist.environment())
    return run_dir


def prepare_data(cfg: RunConfig) -> DataBundle:
    """Load the data set; with ``loss: bce`` a two-class problem becomes one sigmoid logit."""
    data = load(cfg.data, cfg.seed)
    if cfg.train.loss == "bce" and data.spec.task == "classification" and data.spec.num_classes == 2:
        data.spec.task = "binary"
        as_float = {k: Split(v.x, v.y.float()) for k, v in data.splits().items()}
        data = DataBundle(data.spec, as_float["train"], as_float.get("val"), as_float["test"])
    resolve_loss(cfg.train.loss, data.spec)  # a loss that cannot fit the task fails here
    return data


def save_model(run_dir: Path, model: nn.Module, cfg: RunConfig, spec: DataSpec) -> None:
    """model.safetensors (weights) and model.json (enough to rebuild it without the data)."""
    weights = ckpt.saveable(model.state_dict())
    atomic.write_bytes(run_dir / "model.safetensors", safetensors.torch.save(weights))
    meta = {
        "format": "torchkeel-model-1",
        "torchkeel": __version__,
        "model": cfg.model.model_dump(mode="json"),
        "spec": spec.to_dict(),
        "loss": resolve_loss(cfg.train.loss, spec),
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
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    spec = DataSpec.from_dict(meta["spec"])
    model = build(meta["model"], spec)
    state = safetensors.torch.load_file(str(weights_file), device=str(device))
    model.load_state_dict(state)
    return model.to(device).eval(), spec, meta


def load_run_config(run_dir: Path) -> RunConfig:
    from torchkeel.config import read_yaml

    return validate_config(read_yaml(run_dir / "config.yaml"))


def evaluate_run(run_dir: Path, split: str = "test") -> dict[str, float]:
    """Re-evaluate a finished run on a split rebuilt from its own config and seed."""
    from torchkeel.evaluate.metrics import evaluate
    from torchkeel.train.losses import build_loss

    cfg = load_run_config(run_dir)
    model, spec, meta = load_model(run_dir, runtime.pick_device(cfg.train.device))
    data = prepare_data(cfg)
    part = data.splits().get(split)
    if part is None:
        raise RunError(f"this run's data has no '{split}' split (splits: {', '.join(data.splits())})")
    return evaluate(model, part, spec, build_loss(meta["loss"]), cfg.eval.metrics, cfg.eval.batch_size, cfg.eval.top_k)


def latest_checkpoint(run_dir: Path) -> Path:
    found = ckpt.list_checkpoints(run_dir / "checkpoint")
    if not found:
        raise RunError(f"{run_dir.name} has no checkpoint to resume from; start it again with `keel train`")
    return found[-1]


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
