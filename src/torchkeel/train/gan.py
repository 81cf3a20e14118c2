"""The GAN loop: its own function, readable top to bottom (not a flag on ``fit``).

Per step: a discriminator step on real images (target 1) and generated ones (target 0), then
a generator step with the non-saturating loss (the generator maximises log D(G(z)), i.e.
BCE-with-logits against target 1; Goodfellow et al. 2014, section 3). Adam lr 2e-4, beta1
0.5 as in DCGAN. Every epoch: a PNG grid of samples from one fixed noise batch, and the
Fréchet distance between real and generated images in the feature space of a classifier
trained on the same data (``torchkeel.evaluate.frechet``; not Inception-FID).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from rich.console import Console
from torch import nn

from torchkeel import atomic
from torchkeel.config import GanConfig, RunConfig
from torchkeel.data.bundle import DataBundle, DataSpec
from torchkeel.data.images import normalise
from torchkeel.data.loader import TensorLoader
from torchkeel.errors import TrainingError
from torchkeel.evaluate.frechet import features, frechet_distance
from torchkeel.models.gan import GAN
from torchkeel.tasks.classify import MULTICLASS
from torchkeel.train import runtime
from torchkeel.train.progress import TrainProgress


@dataclass
class GanRun:
    """The result of :func:`fit_gan`: the trained GAN and one record per epoch."""

    model: GAN
    history: list[dict[str, Any]]
    train_seconds: float
    frechet_real: float  # real vs real (train vs test images): the floor a perfect generator reaches
    path: Path | None = None


def fit_gan(
    gan: GAN,
    data: DataBundle,
    config: RunConfig | None = None,
    *,
    feature_net: nn.Module,
    run_dir: str | Path | None = None,
    progress: bool = True,
    console: Console | None = None,
    **options: Any,
) -> GanRun:
    """Train ``gan`` on ``data``'s train images; ``options`` as in ``fit`` (``epochs=``,
    ``batch_size=``, ``seed=``, ...); the GAN's own settings are ``train.gan``.
    ``feature_net`` maps normalised images to feature vectors (see :func:`feature_classifier`)."""
    from torchkeel.train.loop import fit_config

    cfg = fit_config(config, options)
    t, g = cfg.train, cfg.train.gan or GanConfig()
    runtime.set_threads(t.threads)
    runtime.seed_everything(cfg.seed)
    device = runtime.pick_device(t.device)
    gan.to(device)
    feature_net.to(device)
    # drop_last: a last batch of one image would break BatchNorm's batch statistics
    loader = TensorLoader(data.train.x.to(device), data.train.y.to(device), t.batch_size, seed=cfg.seed, drop_last=True)
    optimizers = (
        torch.optim.Adam(gan.discriminator.parameters(), lr=g.lr, betas=g.betas),
        torch.optim.Adam(gan.generator.parameters(), lr=g.lr, betas=g.betas),
    )
    real_eval = data.test.x[: g.frechet_samples]
    real_features = features(feature_net, real_eval)
    frechet_real = frechet_distance(features(feature_net, data.train.x[: len(real_eval)]), real_features)
    run_dir = Path(run_dir) if run_dir is not None else None
    bar = TrainProgress(t.epochs, console, enabled=progress)
    history: list[dict[str, Any]] = []
    t_start = time.perf_counter()

    for epoch in range(t.epochs):
        bar.start_epoch(epoch, len(loader))
        with flush_denormals():
            losses = gan_epoch(gan, loader, epoch, optimizers, data.spec, g.d_steps, bar, t.log_every)
        seconds = bar.end_epoch(epoch, losses, {}, g.lr)
        eval_noise = torch.Generator().manual_seed(cfg.seed + 1)  # the same samples every epoch
        generated = from_tanh_range(gan.sample(len(real_eval), eval_noise), data.spec)
        frechet = frechet_distance(features(feature_net, generated), real_features)
        history.append({"epoch": epoch + 1, "seconds": seconds, "frechet": frechet} | _prefixed(losses))
        if run_dir is not None:
            grid = gan.sample(g.grid, torch.Generator().manual_seed(cfg.seed))  # fixed noise: watch it learn
            atomic.write_bytes(_grid_path(run_dir, epoch), grid_png(grid))
            atomic.write_text(run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))
        bar.message(f"          frechet {frechet:.2f} (real vs real {frechet_real:.2f})")

    return GanRun(gan, history, time.perf_counter() - t_start, frechet_real, run_dir)


def gan_epoch(
    gan: GAN,
    loader: TensorLoader,
    epoch: int,
    optimizers: tuple[torch.optim.Optimizer, torch.optim.Optimizer],
    spec: DataSpec,
    d_steps: int,
    bar: TrainProgress,
    log_every: int,
) -> dict[str, float]:
    """One pass over the train images; returns the epoch's mean losses and D's mean outputs."""
    opt_d, opt_g = optimizers
    gan.train()
    device = loader.x.device
    totals = torch.zeros(6, dtype=torch.float64, device=device)  # d loss, g loss, D(x), D(G(z)), n, g steps
    for step, (real, labels) in enumerate(loader.epoch(epoch)):
        real = to_tanh_range(real, spec)  # (B, C, H, W) in [-1, 1], like the generator's output
        n = len(real)
        labels = labels if gan.classes else None
        fake_labels = torch.randint(gan.classes, (n,), device=device) if gan.classes else None
        fake = gan.generator(torch.randn(n, gan.latent_dim, device=device), fake_labels)

        # discriminator: real -> 1, generated -> 0 (detached: no generator gradient here)
        d_real = gan.discriminator(real, labels)  # (B,) logits
        d_fake = gan.discriminator(fake.detach(), fake_labels)
        loss_d = bce(d_real, 1.0) + bce(d_fake, 0.0)
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()

        # generator, every d_steps-th batch: the non-saturating loss -log D(G(z))
        if (step + 1) % d_steps == 0:
            loss_g = bce(gan.discriminator(fake, fake_labels), 1.0)
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            totals[1] += loss_g.detach()
            totals[5] += 1
        with torch.no_grad():
            totals[0] += loss_d.detach()
            totals[2] += torch.sigmoid(d_real).mean()
            totals[3] += torch.sigmoid(d_fake).mean()
            totals[4] += 1
        if (step + 1) % log_every == 0:
            bar.update(step + 1, (step + 1) * n, {})
    d_loss, g_loss, p_real, p_fake, steps, g_steps = totals.tolist()  # the epoch's one host sync
    if not (math.isfinite(d_loss) and math.isfinite(g_loss)):
        raise TrainingError(f"GAN losses became non-finite in epoch {epoch + 1}: lower train.gan.lr")
    steps = max(steps, 1)
    return {
        "d_loss": d_loss / steps,
        "g_loss": g_loss / max(g_steps, 1),
        "D(x)": p_real / steps,
        "D(G(z))": p_fake / steps,
    }


@contextlib.contextmanager
def flush_denormals() -> Iterator[None]:
    """Treat denormal floats as zero on the CPU while inside. Adam's second moments of a
    GAN's tiny gradients sink into the denormal range, where x86 arithmetic is ~100x slower:
    measured here, DCGAN epochs on digits went from 0.25 s to 1-15 s without this, with the
    same results. torch has no getter for the flag, so it is reset to torch's default (off)."""
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def _prefixed(losses: dict[str, float]) -> dict[str, float]:
    return {f"train/{k}": v for k, v in losses.items()}


def bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def to_tanh_range(x: torch.Tensor, spec: DataSpec) -> torch.Tensor:
    """Normalised images (as the data set gives them) -> pixels in [-1, 1]."""
    mean = torch.as_tensor(spec.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std = torch.as_tensor(spec.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x * std + mean) * 2 - 1


def from_tanh_range(x: torch.Tensor, spec: DataSpec) -> torch.Tensor:
    """Generated pixels in [-1, 1] -> normalised like the data set (what its classifier sees)."""
    return normalise((x + 1) / 2, spec.mean, spec.std)


def grid_png(images: torch.Tensor, nrow: int = 8) -> bytes:
    """Images (N, C, H, W) in [-1, 1] as one PNG grid, ``nrow`` per row (grey stays grey)."""
    from PIL import Image
    from torchvision.utils import make_grid

    grid = make_grid((images.float().cpu() + 1) / 2, nrow=nrow, padding=2, pad_value=0.5)  # (3, H', W')
    pixels = (grid.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    image = Image.fromarray(pixels[:, :, 0] if images.shape[1] == 1 else pixels)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _grid_path(run_dir: Path, epoch: int) -> Path:
    folder = run_dir / "samples"
    folder.mkdir(exist_ok=True)
    return folder / f"epoch-{epoch + 1:03d}.png"


def feature_classifier(data: DataBundle, cfg: RunConfig) -> tuple[nn.Module, float]:
    """A ``simple_cnn`` trained on ``data`` for ``train.gan.classifier_epochs``; returns its
    penultimate layer (the hidden layer's activations: the features) and its test accuracy."""
    from torchkeel.models import build
    from torchkeel.train.loop import fit

    g = cfg.train.gan or GanConfig()
    runtime.seed_everything(cfg.seed)
    # the GAN's data, as the labelled set it is: a classifier learns its features
    labelled = dataclasses.replace(data, spec=dataclasses.replace(data.spec, task=MULTICLASS.name))
    classifier = build("simple_cnn", labelled.spec)
    run = fit(
        classifier,
        labelled,
        epochs=g.classifier_epochs,
        batch_size=64,
        seed=cfg.seed,
        device=cfg.train.device,
        threads=cfg.train.threads,
        progress=False,
    )
    accuracy = run.evaluate("test", ["accuracy"])["accuracy"]
    return nn.Sequential(*list(classifier)[:-1]).eval(), accuracy


def sample_png(run_dir: Path, n: int, seed: int = 0, label: int | None = None, nrow: int = 8) -> bytes:
    """``n`` samples of a trained GAN run as a PNG grid (``keel sample``)."""
    from torchkeel.errors import RunError
    from torchkeel.experiment import load_model

    model, spec, meta = load_model(run_dir)
    if not isinstance(model, GAN):
        raise RunError(f"{run_dir.name} trained '{meta['model']['name']}', not a GAN: `keel sample` needs a dcgan run")
    return generate_png(model, spec, n, seed, label, nrow, where=f"{run_dir.name}", option="--label")


def generate_png(
    model: GAN,
    spec: DataSpec,
    n: int,
    seed: int = 0,
    label: int | None = None,
    nrow: int = 8,
    *,
    where: str = "this GAN",
    option: str = "label",
) -> bytes:
    """``n`` samples from the noise of ``seed`` (and class ``label`` for a conditional GAN) as
    one PNG grid; the same arguments give the same bytes. ``option`` is what the caller calls
    the label in error messages."""
    from torchkeel.errors import RunError

    labels = None
    if label is not None:
        if not model.classes:
            raise RunError(f"{where} is not class-conditional: drop {option}")
        if not 0 <= label < model.classes:
            raise RunError(f"{option} must be a class index 0..{model.classes - 1} ({', '.join(spec.classes or [])})")
        labels = torch.full((n,), label, dtype=torch.int64)
    with torch.inference_mode():
        images = model.sample(n, torch.Generator().manual_seed(seed), labels)
    return grid_png(images, nrow)


def train_gan_experiment(
    cfg: RunConfig, data: DataBundle, gan: GAN, say: Any, console: Console, progress: bool
) -> Path:
    """Steps 3-6 of ``keel train`` for a GAN: feature classifier, GAN loop, run folder."""
    from torchkeel import runs
    from torchkeel.experiment import discarded_on_failure, result_table, save_model

    if cfg.train.gan is None:
        cfg.train.gan = GanConfig()  # config.yaml records the GAN settings in force
    g, t = cfg.train.gan, cfg.train
    device = runtime.pick_device(t.device)
    feature_net, accuracy = feature_classifier(data, cfg)
    say.detail(f"feature classifier for the Frechet distance: simple_cnn, test accuracy {accuracy:.4f}")
    say.step(
        "3-5/6",
        "Train",
        f"GAN: D step (BCE real 1, fake 0), G step (non-saturating BCE); Adam lr {g.lr:g} betas {tuple(g.betas)}, "
        f"batch {t.batch_size}, {t.epochs} epochs on {device}",
    )
    run_dir = runs.create_run(cfg.out_dir, cfg.name or f"{cfg.data.name}-{cfg.model.name}")
    with discarded_on_failure(run_dir):  # a GAN run writes no checkpoint: a failed one keeps nothing
        atomic.write_text(run_dir / "config.yaml", cfg.to_yaml())
        atomic.write_json(run_dir / "env.json", runtime.environment(device))
        say.detail(f"run folder {run_dir}")
        run = fit_gan(gan, data, cfg, feature_net=feature_net, run_dir=run_dir, console=console, progress=progress)

    say.step("6/6", "Evaluate", "Frechet distance in the classifier's feature space (not Inception-FID)")
    save_model(run_dir, run.model, cfg, data.spec, loss="adversarial")
    first, last = run.history[0]["frechet"], run.history[-1]["frechet"]
    summary = {
        "test": {"frechet": last},
        "frechet_first_epoch": first,
        "frechet_real_vs_real": run.frechet_real,
        "feature_classifier": {"model": "simple_cnn", "test_accuracy": accuracy},
        "epochs": len(run.history),
        "stopped_early": False,
        "train_seconds": run.train_seconds,
        "parameters": sum(p.numel() for p in gan.parameters()),
        "data": cfg.data.name,
        "model": cfg.model.name,
    }
    atomic.write_json(run_dir / "summary.json", summary)
    from torchkeel.evaluate.workflow import after_training

    after_training(run_dir, cfg, run.model, data, summary, say.detail, console)  # report.html, loggers
    console.print(result_table(summary["test"], summary, run_dir))
    say.detail(f"samples per epoch in {run_dir / 'samples'}; more with `keel sample {run_dir} --n 64 --out grid.png`")
    return run_dir
