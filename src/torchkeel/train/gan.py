"""The GAN loop: its own function, readable top to bottom (not a flag on ``fit``).

Per step: a discriminator step on real images (target 1) and generated ones (target 0), then
a generator step with the non-saturating loss (the generator maximises log D(G(z)), i.e.
BCE-with-logits against target 1; Goodfellow et al. 2014, section 3). Adam lr 2e-4, beta1
0.5 as in DCGAN. Every epoch: a PNG grid of samples from one fixed noise batch, and the
Fréchet distance between real and generated images in the feature space of a classifier
trained on the same data (``torchkeel.evaluate.frechet``; not Inception-FID).

Checkpoints, exact resume and stopping on SIGINT/SIGTERM are ``fit``'s (train/resume.py): a
checkpoint holds both networks, both optimisers (by name), the RNG states, the position in
the epoch and the epoch's running totals.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import time
from collections.abc import Callable, Iterator
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
from torchkeel.tasks import task_of
from torchkeel.tasks.classify import MULTICLASS
from torchkeel.train import checkpoint as ckpt
from torchkeel.train import runtime
from torchkeel.train.progress import TrainProgress
from torchkeel.train.resume import CheckpointSaver, resume_from, stop_requested, stop_with_checkpoint
from torchkeel.train.signals import StopSignals
from torchkeel.train.state import LoopState


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
    resume: str | Path | ckpt.Checkpoint | None = None,
    progress: bool = True,
    console: Console | None = None,
    stop: StopSignals | None = None,
    **options: Any,
) -> GanRun:
    """Train ``gan`` on ``data``'s train images; ``options`` as in ``fit`` (``epochs=``,
    ``batch_size=``, ``seed=``, ...); the GAN's own settings are ``train.gan``.
    ``feature_net`` maps normalised images to feature vectors (see :func:`feature_classifier`).
    ``run_dir``, ``resume`` and ``stop`` as in ``fit``: checkpoints (both networks, both
    optimisers, the RNGs, the position) by ``train.checkpoint``, resumed exactly, and
    SIGINT/SIGTERM ending with a checkpoint."""
    from torchkeel.train.loop import fit_config

    cfg = fit_config(config, options)
    t, g = cfg.train, cfg.train.gan or GanConfig()
    runtime.set_threads(t.threads if t.threads != "auto" else None)  # the auto rule is fit()'s
    runtime.seed_everything(cfg.seed)
    device = runtime.pick_device(t.device)
    gan.to(device)
    judge = FrechetJudge(feature_net.to(device), data, g.frechet_samples, cfg.seed)
    # drop_last: a last batch of one image would break BatchNorm's batch statistics
    loader = TensorLoader(data.train.x.to(device), data.train.y.to(device), t.batch_size, seed=cfg.seed, drop_last=True)
    optimizers = {net: torch.optim.Adam(getattr(gan, net).parameters(), lr=g.lr, betas=g.betas) for net in NETS}
    meter = GanMeter(device)
    run_dir = Path(run_dir) if run_dir is not None else None
    saver = None if run_dir is None else CheckpointSaver(run_dir, t.checkpoint, gan, optimizers, None, None, meter)
    state, totals = LoopState(steps_per_epoch=len(loader)), None
    if resume is not None:
        state, totals = resume_from(resume, gan, optimizers, None, None, len(loader))
    bar = TrainProgress(t.epochs, console, enabled=progress)
    t_start = time.perf_counter()

    for epoch in range(state.epoch, t.epochs):
        bar.start_epoch(epoch, len(loader), done=state.batch)
        meter.reset(totals)  # resumed mid-epoch: this epoch's totals so far
        totals = None
        with flush_denormals():
            for batch, (real, labels) in enumerate(loader.epoch(epoch, start=state.batch), start=state.batch):
                real = to_tanh_range(real, data.spec)  # (B, C, H, W) in [-1, 1], like the generator's output
                meter.update(*gan_step(gan, real, labels, optimizers, train_g=(batch + 1) % g.d_steps == 0))
                state.global_step, state.batch = state.global_step + 1, batch + 1
                at_log = state.batch % t.log_every == 0
                if at_log:
                    bar.update(state.batch, state.batch * loader.batch_size, {})
                if saver is not None and state.batch < len(loader) and saver.due(state, sync_point=at_log):
                    saver.save(state, meter)
                if stop_requested(stop, sync_point=at_log):
                    stop_with_checkpoint(stop, saver, state, meter)
        losses = meter.compute(epoch)  # the epoch's one host sync
        seconds = bar.end_epoch(epoch, losses, {}, g.lr)
        frechet = judge.distance(gan)
        state.history.append({"epoch": epoch + 1, "step": state.global_step, "seconds": seconds, "frechet": frechet})
        state.history[-1] |= {f"train/{k}": v for k, v in losses.items()}
        state.epoch, state.batch = epoch + 1, 0
        if run_dir is not None:
            grid = gan.sample(g.grid, torch.Generator().manual_seed(cfg.seed))  # fixed noise: watch it learn
            atomic.write_bytes(_grid_path(run_dir, epoch), grid_png(grid))
        bar.message(f"          frechet {frechet:.2f} (real vs real {judge.floor:.2f})")
        if saver is not None and saver.due(state, epoch_end=True, final=state.epoch == t.epochs):
            saver.save(state)  # with metrics.jsonl
        if stop_requested(stop):
            stop_with_checkpoint(stop, saver, state, None)

    if saver is not None:
        saver.close()
    return GanRun(gan, state.history, time.perf_counter() - t_start, judge.floor, run_dir)


NETS = ("discriminator", "generator")  # the GAN's two networks, each with its own Adam


def gan_step(
    gan: GAN,
    real: torch.Tensor,
    labels: torch.Tensor,
    optimizers: dict[str, torch.optim.Optimizer],
    train_g: bool,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """A discriminator step on ``real`` (B, C, H, W) in [-1, 1] and as many generated images,
    then, with ``train_g``, a generator step; returns D's loss, G's loss (None without a
    G step) and D's logits (B,) for the real and the generated images."""
    n, device = len(real), real.device
    labels = labels if gan.classes else None
    fake_labels = torch.randint(gan.classes, (n,), device=device) if gan.classes else None
    fake = gan.generator(torch.randn(n, gan.latent_dim, device=device), fake_labels)

    # discriminator: real -> 1, generated -> 0 (detached: no generator gradient here)
    d_real = gan.discriminator(real, labels)  # (B,) logits
    d_fake = gan.discriminator(fake.detach(), fake_labels)
    loss_d = bce(d_real, 1.0) + bce(d_fake, 0.0)
    optimizers["discriminator"].zero_grad(set_to_none=True)
    loss_d.backward()
    optimizers["discriminator"].step()

    # generator, every d_steps-th batch: the non-saturating loss -log D(G(z))
    loss_g = None
    if train_g:
        loss_g = bce(gan.discriminator(fake, fake_labels), 1.0)
        optimizers["generator"].zero_grad(set_to_none=True)
        loss_g.backward()
        optimizers["generator"].step()
    return loss_d, loss_g, d_real, d_fake


class GanMeter:
    """An epoch's running sums on the device (read with one host sync): D loss, G loss,
    D(x), D(G(z)), D steps, G steps. Also what checks, before a checkpoint is saved, that
    the losses so far are finite."""

    def __init__(self, device: torch.device):
        self.totals = torch.zeros(6, dtype=torch.float64, device=device)

    def reset(self, totals: torch.Tensor | None = None) -> None:
        """A new epoch: zeros, or the totals a mid-epoch checkpoint saved."""
        if totals is None:
            self.totals.zero_()
        else:
            self.totals.copy_(totals)

    @torch.no_grad()
    def update(
        self, loss_d: torch.Tensor, loss_g: torch.Tensor | None, d_real: torch.Tensor, d_fake: torch.Tensor
    ) -> None:
        if loss_g is not None:
            self.totals[1] += loss_g
            self.totals[5] += 1
        self.totals[0] += loss_d
        self.totals[2] += torch.sigmoid(d_real).mean()
        self.totals[3] += torch.sigmoid(d_fake).mean()
        self.totals[4] += 1

    def check(self, epoch: int, context: Callable[[], str] = lambda: "") -> None:
        d_loss, g_loss = self.totals[:2].tolist()
        if not (math.isfinite(d_loss) and math.isfinite(g_loss)):
            raise TrainingError(f"GAN losses became non-finite in epoch {epoch + 1}: lower train.gan.lr{context()}")

    def compute(self, epoch: int) -> dict[str, float]:
        """The epoch's mean losses and D's mean outputs (TrainingError if non-finite)."""
        self.check(epoch)
        d_loss, g_loss, p_real, p_fake, steps, g_steps = self.totals.tolist()
        steps = max(steps, 1)
        means = {"d_loss": d_loss / steps, "g_loss": g_loss / max(g_steps, 1)}
        return means | {"D(x)": p_real / steps, "D(G(z))": p_fake / steps}


class FrechetJudge:
    """The Fréchet distance between the test images and as many generated from one fixed
    noise batch, in ``feature_net``'s feature space; ``floor``: train vs test images."""

    def __init__(self, feature_net: nn.Module, data: DataBundle, samples: int, seed: int):
        self.feature_net, self.spec, self.seed = feature_net, data.spec, seed
        real = data.test.x[:samples]
        self.n, self.real = len(real), features(feature_net, real)
        self.floor = frechet_distance(features(feature_net, data.train.x[: self.n]), self.real)

    def distance(self, gan: GAN) -> float:
        noise = torch.Generator().manual_seed(self.seed + 1)  # the same samples every epoch
        generated = from_tanh_range(gan.sample(self.n, noise), self.spec)
        return frechet_distance(features(self.feature_net, generated), self.real)


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


def train_gan_experiment(
    cfg: RunConfig,
    data: DataBundle,
    gan: GAN,
    say: Any,
    console: Console,
    progress: bool,
    resume_dir: Path | None = None,
) -> Path:
    """Steps 3-6 of ``keel train`` for a GAN: feature classifier, GAN loop, run folder;
    ``resume_dir``: continue that run from its newest good checkpoint."""
    from torchkeel.run_model import result_table, save_model
    from torchkeel.train.session import run_session

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
    with run_session(cfg, resume_dir, device, data.spec, say) as (run_dir, checkpoint, stop):
        run = fit_gan(
            gan,
            data,
            cfg,
            feature_net=feature_net,
            run_dir=run_dir,
            resume=checkpoint,
            console=console,
            progress=progress,
            stop=stop,
        )

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
        "task": data.spec.task,
        "key_metric": task_of(data.spec).key_metric,
    }
    atomic.write_json(run_dir / "summary.json", summary)
    from torchkeel.evaluate.workflow import after_training

    after_training(run_dir, cfg, run.model, data, summary, say.detail, console)  # report.html, loggers
    console.print(result_table(summary["test"], summary, run_dir))
    say.detail(f"samples per epoch in {run_dir / 'samples'}; more with `keel sample {run_dir} --n 64 --out grid.png`")
    return run_dir
