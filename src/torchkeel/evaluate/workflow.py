"""Evaluation steps on a run folder, as ``keel train`` (at its end), ``keel eval --attack``,
``keel report`` and ``keel explain`` run them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from torch import nn

from torchkeel import phases
from torchkeel.config import RunConfig
from torchkeel.data.bundle import DataBundle
from torchkeel.errors import RunError


def after_training(
    run_dir: Path,
    cfg: RunConfig,
    model: nn.Module,
    data: DataBundle,
    summary: dict[str, Any],
    say: Callable[[str], None],
    console: Console | None = None,
) -> None:
    """The end of ``keel train``: the configured attacks (robustness.json), report.html, and
    the test metrics for the loggers."""
    # imported only when used: the report's plotting costs ~0.4 s of a fast run's process
    device = next(model.parameters()).device
    attack = cfg.eval.attack
    if attack is not None:
        from torchkeel.evaluate.attack import check_attackable
        from torchkeel.train.losses import resolve_loss

        check_attackable(data.spec)
        loss = resolve_loss(cfg.train.loss, data.spec)
        for r in attack_model(run_dir, model, data, loss, attack.method, attack.eps, attack.steps, "test", cfg.seed):
            say(
                f"{r['method']} eps {r['eps']:g}: accuracy {r['clean_accuracy']:.4f} -> {r['adversarial_accuracy']:.4f}"
            )
    if cfg.eval.report:
        phases.mark("report")
        from torchkeel.evaluate.report import write_report

        path = write_report(run_dir, model=model, data=data, device=device, console=console)
        say(f"report {path}")
    if cfg.train.loggers:
        from torchkeel.evaluate.report import REPORT_FILE
        from torchkeel.train.loggers import log_summary

        log_summary(cfg, run_dir, summary, [run_dir / REPORT_FILE, run_dir / "summary.json", run_dir / "config.yaml"])


def attack_model(
    run_dir: Path,
    model: nn.Module,
    data: DataBundle,
    loss: str,
    method: str,
    eps: list[float],
    steps: int,
    split: str,
    seed: int,
) -> list[dict[str, Any]]:
    """Clean and adversarial accuracy for each eps, merged into robustness.json."""
    from torchkeel.evaluate.attack import record_results, robustness
    from torchkeel.train.losses import build_loss

    part = data.splits().get(split)
    if part is None:
        raise RunError(f"this run's data has no '{split}' split (splits: {', '.join(data.splits())})")
    loss_fn = build_loss(loss, spec=data.spec)  # the training loss, without label smoothing
    results = [robustness(model, part, data.spec, loss_fn, method, e, steps=steps, seed=seed) for e in eps]
    record_results(run_dir, results, split)
    return results


def attack_run(
    run_dir: Path, method: str, eps: list[float], steps: int, split: str, model_code: Any = None
) -> list[dict[str, Any]]:
    """``keel eval RUN --attack``: attack the saved model, record it, rebuild the report."""
    from torchkeel.evaluate.attack import check_attackable
    from torchkeel.evaluate.report import write_report
    from torchkeel.run_model import load_model, load_run_config, prepare_data
    from torchkeel.train import runtime

    cfg = load_run_config(run_dir)
    model, spec, meta = load_model(run_dir, runtime.pick_device(cfg.train.device), model_code)
    check_attackable(spec)
    data = prepare_data(cfg)
    results = attack_model(run_dir, model, data, meta["loss"], method, eps, steps, split, cfg.seed)
    write_report(run_dir, model=model, data=data, device=next(model.parameters()).device)
    return results


def report_run(run_dir: Path, console: Console | None = None, model_code: Any = None) -> Path:
    """``keel report RUN``: rebuild report.html from the saved model and the run's data."""
    from torchkeel.evaluate.report import write_report
    from torchkeel.run_model import load_model, load_run_config
    from torchkeel.train import runtime

    cfg = load_run_config(run_dir)
    model, _, _ = load_model(run_dir, runtime.pick_device(cfg.train.device), model_code)
    return write_report(run_dir, model=model, device=next(model.parameters()).device, console=console)


def explain_run(
    run_dir: Path, files: list[Path], out_dir: Path | None, model_code: Any = None
) -> list[tuple[Path, str, float]]:
    """``keel explain RUN FILE...``: saliency and Grad-CAM images in ``out_dir``
    (default: the run's ``explain/`` folder)."""
    from torchkeel.evaluate.explain import explain_images
    from torchkeel.run_model import load_model, run_task

    model, spec, _ = load_model(run_dir, "cpu", model_code)
    run_task(spec, "explain", run_dir)  # a GAN run points at `keel sample`
    return explain_images(model, spec, files, out_dir or run_dir / "explain")
