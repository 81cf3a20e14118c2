"""The six steps of a training run from a config, narrated: what ``keel train`` runs.

1 preprocess, 2 design, 3-5 forward / loss / backward+update (``fit``), 6 evaluate; then the
run folder gets the model, its metadata and a summary.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from torch import nn

from torchkeel import atomic, phases, runs
from torchkeel.auto_ensemble import save_val_probabilities
from torchkeel.config import RunConfig
from torchkeel.data import DataBundle, fitted_spec
from torchkeel.data.kinds import kind_of
from torchkeel.errors import TrainingInterrupted
from torchkeel.evaluate.workflow import after_training
from torchkeel.memory import allocation_errors
from torchkeel.models import build, count_parameters, rebuild
from torchkeel.run_model import (  # noqa: F401  (re-exported: the Python API's run helpers)
    evaluate_run,
    load_model,
    load_run_config,
    prepare_data,
    result_table,
    run_task,
    save_model,
)
from torchkeel.tasks import task_of
from torchkeel.train import distributed as dist
from torchkeel.train import runtime
from torchkeel.train.footprint import check_images_fit, check_training_fits
from torchkeel.train.loop import Run, fit
from torchkeel.train.losses import resolve_loss
from torchkeel.train.session import run_session
from torchkeel.train.signals import StopSignals


def train(
    cfg: RunConfig,
    console: Console,
    *,
    resume: str | None = None,
    progress: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    model_code: Any = None,
    test: bool = True,
) -> Path:
    """Run the whole workflow for ``cfg``; return the run folder. ``resume`` (a run folder,
    name or ``latest``) continues that run with its own saved config from its newest good
    checkpoint, or from the start when it has none yet. ``on_epoch`` goes to :func:`fit`
    (``keel tune`` prunes trials with it). ``model_code``: on resume, the code of a custom
    model, which a run folder's own config.yaml is never trusted to name (see models.rebuild).
    ``test=False``: one of several candidates (``keel train --auto``): the trained model is
    measured on the val split, and the test split, attacks and report wait for
    :func:`finish_run` on the one chosen."""
    say = _Narrator(console)
    resume_dir = None
    if resume is not None:
        resume_dir = runs.resolve_run(resume, cfg.out_dir)
        cfg = load_run_config(resume_dir)
    device = runtime.pick_device(cfg.train.device)  # fail before anything is written
    check_images_fit(cfg, device)  # before a slow decoding pass over an image folder
    say.step("1/6", "Preprocess", f"loading '{cfg.data.name}'")
    phases.mark("data")
    data = prepare_data(cfg, fitted_spec(resume_dir) if resume_dir is not None else None)
    say.detail(data.summary())
    if data.spec.extra.get("truncated"):
        say.detail(_truncation_note(data, cfg.data.text.max_length))
    if "corpus" in data.spec.extra:  # a language-model corpus: its tokens and what is held out
        from torchkeel.data.describe import corpus_details, corpus_lines

        for line in corpus_lines(corpus_details(data.spec))[:2]:
            say.detail(escape(line))
    if data.spec.mean is not None and kind_of(data.spec).pixels:
        source = data.spec.extra.get("normalisation", "train-split")
        say.detail(f"normalised per channel with {source} mean {_fmt(data.spec.mean)}, std {_fmt(data.spec.std)}")

    train_batch = min(dist.local_batch_size(cfg.train.batch_size), len(data.train) if data.train is not None else 1)
    check_training_fits(cfg, data, device, train_batch)  # on the meta device: before anything is allocated
    runtime.seed_everything(cfg.seed)  # the model's initial weights depend on the seed
    phases.mark("model build")
    with allocation_errors("building the model"):
        if resume is None:
            model = build(cfg.model, data.spec)  # the user's own config: its custom target is theirs
        else:
            model = rebuild(cfg.model.model_dump(mode="json"), data.spec, model_code, resume_dir.name)
    n_params = count_parameters(model)
    say.step("2/6", "Design", f"{cfg.model.name}: {n_params:,} parameters")
    # which pretrained tensors were loaded (matched / missing / unexpected)
    notes = {getattr(m, "weights_note", None) for m in model.modules()} - {None}
    for note in sorted(notes) if resume is None else ():
        say.detail(escape(note))
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
    phases.mark("training")
    session = run_session(cfg, resume_dir, device, data.spec, say)
    with session as (run_dir, checkpoint, stop), allocation_errors("training"):
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

    split = "test" if test else "val"
    say.step("6/6", "Evaluate", f"{split} split" + ("" if test else " (the test split waits for the chosen recipe)"))
    phases.mark("evaluation")
    measured = run.evaluate(split)
    if not dist.is_main():
        return run_dir  # DDP: rank 0 alone writes the model and the summary
    phases.mark("writes (model, summary)")
    save_model(run_dir, run.model, cfg, data.spec)
    summary = {
        split: measured,
        "epochs": len(run.history),
        "stopped_early": run.stopped_early,
        "stopped_by": run.stopped_by,
        "train_seconds": run.train_seconds,
        "parameters": n_params,
        "samples_per_second": _throughput(run),
        **_token_throughput(run),
        "nan_skips": run.nan_skips,
        "data": cfg.data.name,
        "model": cfg.model.name,
        "task": task.name,
        "key_metric": task.key_metric,  # what `keel runs` shows first
    }
    if task.notes():  # e.g. sacreBLEU's signatures
        summary["notes"] = task.notes()
    if run.compile_seconds is not None:  # train.compile: the first step, tracing and compiling included
        summary["compile_seconds"] = run.compile_seconds
    atomic.write_json(run_dir / "summary.json", summary)
    if test:
        _after_test(run_dir, cfg, run.model, data, summary, say, console)
    else:  # a --auto candidate: its val probabilities, for the ensemble of the candidates
        save_val_probabilities(run_dir, run.model, data, task, cfg.eval.batch_size, cfg.eval.tta)
    return run_dir


def finish_run(run_dir: Path, console: Console) -> dict[str, float]:
    """The test split, attacks, report and result table of a run trained with ``test=False``
    (the recipe ``keel train --auto`` chose), from its folder: its own config, data split and
    tokeniser; its test metrics go into summary.json beside the val ones."""
    say = _Narrator(console)
    cfg = load_run_config(run_dir)
    model, spec, _ = load_model(run_dir, runtime.pick_device(cfg.train.device))
    data = prepare_data(cfg, spec)
    say.step("6/6", "Evaluate", f"test split, {run_dir.name}")
    run = Run(model, data, cfg, [], 0.0, run_dir)
    summary = runs.read_json(run_dir / "summary.json")
    summary["test"] = run.evaluate("test")
    atomic.write_json(run_dir / "summary.json", summary)
    _after_test(run_dir, cfg, model, data, summary, say, console)
    return summary["test"]


def _after_test(
    run_dir: Path, cfg: RunConfig, model: nn.Module, data: DataBundle, summary: dict, say: _Narrator, console: Console
) -> None:
    after_training(run_dir, cfg, model, data, summary, say.detail, console)  # attacks, report.html, loggers
    phases.mark("result table")
    console.print(result_table(summary["test"], summary, run_dir))


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


def _finetune(
    run: Run, cfg: RunConfig, run_dir: Path, say: _Narrator, console: Console, progress: bool, stop: StopSignals
) -> Run:
    """Transfer learning's second phase (train/finetune.py): everything trainable, lower lr."""
    from torchkeel.train.finetune import finetune

    settings = cfg.train.finetune
    frozen = sum(p.numel() for p in run.model.parameters() if not p.requires_grad)
    say.detail(f"finetune: unfreezing {frozen:,} parameters; {settings.epochs} more epochs at lr {settings.lr:g}")
    return finetune(run, settings, run_dir=run_dir, progress=progress, console=console, stop=stop)


def _init_weights(model: nn.Module, path: str, say: _Narrator) -> None:
    from torchkeel.weights import load_weights

    count = load_weights(model, path)
    say.detail(f"initial weights from {path} ({count} tensors)")


class _Narrator:
    def __init__(self, console: Console):
        self.console = console

    def step(self, number: str, name: str, text: str) -> None:
        self.console.print(f"[bold cyan][{number}] {name}[/]  {text}", highlight=False)

    def detail(self, text: str) -> None:
        self.console.print(f"       {text}", highlight=False)

    def warn(self, text: str) -> None:
        self.console.print(f"       [bold yellow]warning:[/] {escape(text)}", highlight=False)


def _throughput(run: Run) -> float:
    seconds = sum(r["seconds"] for r in run.history)
    per_epoch = len(run.data.train)
    steps = getattr(run.data.train, "steps_per_epoch", None)  # a corpus: random windows, not a pass
    if steps is not None:
        per_epoch = steps * dist.local_batch_size(run.config.train.batch_size) * dist.world_size()
    return per_epoch * len(run.history) / max(seconds, 1e-9)


def _token_throughput(run: Run) -> dict[str, float]:
    """A corpus's training throughput in tokens (windows x block size), validation included."""
    block = getattr(run.data.train, "block_size", None)
    return {} if block is None else {"tokens_per_second": _throughput(run) * block}


def _fmt(values: list[float] | None) -> str:
    return "[" + ", ".join(f"{v:.3f}" for v in (values or [])) + "]"


def _truncation_note(data: Any, max_length: int) -> str:
    total = sum(len(split) for split in data.splits().values())
    return (
        f"{data.spec.extra['truncated']:,} of {total:,} texts are longer than data.text.max_length "
        f"({max_length:,} tokens) and were cut there; a bag model (embedding_bag, linear_bow) reads "
        "any length at the same cost: raise data.text.max_length to keep them whole"
    )
