"""The six steps of a training run from a config, narrated: what ``keel train`` runs.

1 preprocess, 2 design, 3-5 forward / loss / backward+update (``fit``), 6 evaluate; then the
run folder gets the model, its metadata and a summary.
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
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
from torchkeel.data.bundle import DataSpec
from torchkeel.errors import KeelError, RunError, StopRequested, TrainingInterrupted
from torchkeel.evaluate.workflow import after_training
from torchkeel.models import build, count_parameters, rebuild, task_name
from torchkeel.tasks import Task, task_of
from torchkeel.train import checkpoint as ckpt
from torchkeel.train import distributed as dist
from torchkeel.train import runtime
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
    model_code: Any = None,
) -> Path:
    """Run the whole workflow for ``cfg``; return the run folder. ``resume`` (a run folder,
    name or ``latest``) continues that run with its own saved config from its newest good
    checkpoint, or from the start when it has none yet. ``on_epoch`` goes to :func:`fit`
    (``keel tune`` prunes trials with it). ``model_code``: on resume, the code of a custom
    model, which a run folder's own config.yaml is never trusted to name (see models.rebuild)."""
    say = _Narrator(console)
    resume_dir = None
    if resume is not None:
        resume_dir = runs.resolve_run(resume, cfg.out_dir)
        cfg = load_run_config(resume_dir)
    device = runtime.pick_device(cfg.train.device)  # fail before anything is written
    say.step("1/6", "Preprocess", f"loading '{cfg.data.name}'")
    data = prepare_data(cfg, fitted_spec(resume_dir) if resume_dir is not None else None)
    say.detail(data.summary())
    if data.spec.mean is not None and data.spec.kind == "image":
        say.detail(f"normalised per channel with train-split mean {_fmt(data.spec.mean)}, std {_fmt(data.spec.std)}")

    runtime.seed_everything(cfg.seed)  # the model's initial weights depend on the seed
    if resume is None:
        model = build(cfg.model, data.spec)  # the user's own config: its custom target is theirs
    else:
        model = rebuild(cfg.model.model_dump(mode="json"), data.spec, model_code, resume_dir.name)
    n_params = count_parameters(model)
    say.step("2/6", "Design", f"{cfg.model.name}: {n_params:,} parameters")
    if cfg.model.init_from and resume is None:
        _init_weights(model, cfg.model.init_from, say)
    task = task_of(data.spec)
    if task.loop != "fit":  # a task with its own loop (the GAN's, train/gan.py), in the same run machinery
        return LOOPS[task.loop](cfg, data, model, say, console, progress, resume_dir)

    t = cfg.train
    say.step(
        "3-5/6",
        "Train",
        f"forward -> {resolve_loss(t.loss, data.spec)} loss -> backward -> {t.optimizer.name} step; "
        f"lr {t.optimizer.lr:g} ({t.schedule.name}), batch {t.batch_size}, {t.epochs} epochs on {device}",
    )
    if dist.active():
        say.detail(dist.describe(t.batch_size))
    with run_session(cfg, resume_dir, device, data.spec, say) as (run_dir, checkpoint, stop):
        if resume_dir is not None and checkpoint is None and cfg.model.init_from:
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
        if stop.received:  # a signal after fit's last look is not lost: the final checkpoint is written
            raise TrainingInterrupted(
                f"training stopped by {stop.name} as it ended; checkpoint written: continue with "
                f"`keel train --resume {run_dir}`",
                stop.exit_code,
            )

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


def _gan_loop(
    cfg: RunConfig,
    data: DataBundle,
    model: nn.Module,
    say: _Narrator,
    console: Console,
    progress: bool,
    resume_dir: Path | None,
) -> Path:
    from torchkeel.train.gan import train_gan_experiment

    return train_gan_experiment(cfg, data, model, say, console, progress, resume_dir)


# the training loops of tasks whose step is not forward -> loss -> backward (Task.loop)
LOOPS: dict[str, Callable[..., Path]] = {"gan": _gan_loop}


@contextmanager
def run_session(
    cfg: RunConfig, resume_dir: Path | None, device: torch.device, spec: DataSpec, say: _Narrator
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


def prepare_data(cfg: RunConfig, fitted: DataSpec | None = None) -> DataBundle:
    """Load the data set; with ``loss: bce`` a two-class problem becomes one sigmoid logit.
    ``fitted``: a trained run's DataSpec, whose tokeniser a rebuilt text set reuses."""
    data = load(cfg.data, cfg.seed, fitted)
    data.spec.task = task_name(cfg.model.name, data.spec.task)  # a GAN generates from a labelled set
    data = task_of(data.spec).prepare(data, cfg.train.loss)  # e.g. bce on two classes: one logit
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


def load_model(
    run_dir: Path, device: str | torch.device = "cpu", model_code: Any = None
) -> tuple[nn.Module, DataSpec, dict[str, Any]]:
    """Rebuild a trained model from model.json and model.safetensors alone. Nothing model.json
    names is imported: a custom model needs ``model_code`` (see models.rebuild)."""
    meta_file, weights_file = run_dir / "model.json", run_dir / "model.safetensors"
    if not meta_file.is_file() or not weights_file.is_file():
        raise RunError(
            f"{run_dir.name} has no trained model: the run did not finish "
            f"(continue it with `keel train --resume {run_dir}`)"
        )
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        spec = DataSpec.from_dict(meta["spec"])
        spec.task = task_name(meta["model"]["name"], spec.task)  # GAN runs saved before tasks had their own
        _check_weights_fit(meta["model"], spec, weights_file, model_code)
        model = rebuild(meta["model"], spec, model_code, run_dir.name)
        model.load_state_dict(safetensors.torch.load_file(str(weights_file), device=str(device)))
    except RunError:
        raise
    except KeelError as e:  # e.g. an unknown model name or option: the run's file, not the user's config
        raise RunError(f"{run_dir.name}: model.json is damaged or edited: {e}") from None
    except Exception as e:  # a damaged or edited file: JSON, key, type, shape and safetensors errors
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise RunError(
            f"{run_dir.name}: model.json or model.safetensors is damaged ({type(e).__name__}: {first})"
        ) from None
    return model.to(device).eval(), spec, meta


def _check_weights_fit(model_cfg: dict[str, Any], spec: DataSpec, weights_file: Path, model_code: Any) -> None:
    """Compare the model's tensor shapes, built on the meta device (no memory), with those in
    the weights file's header before building it for real: an edited model.json cannot make
    loading allocate more than the weights file holds."""
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "initializing zero-element tensors": nothing is allocated here
        skeleton = rebuild(model_cfg, spec, model_code, weights_file.parent.name)
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    with safetensors.safe_open(str(weights_file), framework="pt") as f:
        stored = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    if stored != expected:
        differ = sorted(k for k in expected.keys() | stored.keys() if expected.get(k) != stored.get(k))
        raise RunError(
            f"{weights_file.parent.name}: model.json and model.safetensors disagree on {', '.join(differ[:3])}"
        )


def run_task(spec: DataSpec, use: str, run_dir: Path) -> Task:
    """The task of a loaded run, after checking it can be used for ``use`` (predict, export,
    eval, ...): a GAN run, say, points at ``keel sample``."""
    task = task_of(spec)
    task.require(use, run_dir.name)
    return task


def load_run_config(run_dir: Path) -> RunConfig:
    from torchkeel.config import read_yaml

    return validate_config(read_yaml(run_dir / "config.yaml"))


def evaluate_run(run_dir: Path, split: str = "test", model_code: Any = None) -> dict[str, float]:
    """Re-evaluate a finished run on a split rebuilt from its own config and seed."""
    from torchkeel.evaluate.metrics import evaluate
    from torchkeel.train.losses import build_loss

    cfg = load_run_config(run_dir)
    model, spec, meta = load_model(run_dir, runtime.pick_device(cfg.train.device), model_code)
    run_task(spec, "eval", run_dir)
    data = prepare_data(cfg, spec)
    part = data.splits().get(split)
    if part is None:
        raise RunError(f"this run's data has no '{split}' split (splits: {', '.join(data.splits())})")
    loss = build_loss(meta["loss"], spec=spec)
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


def _throughput(run: Run) -> float:
    seconds = sum(r["seconds"] for r in run.history)
    return len(run.data.train) * len(run.history) / max(seconds, 1e-9)


def _fmt(values: list[float] | None) -> str:
    return "[" + ", ".join(f"{v:.3f}" for v in (values or [])) + "]"
