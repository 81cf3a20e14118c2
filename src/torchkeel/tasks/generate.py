"""Image generation with a GAN: its own loop (train/gan.py), no targets, no per-sample
predictions; the run folder, checkpoints and resume are the supervised ones. Judged by the
Fréchet distance of generated to real images in a simple_cnn's feature space (lower is
better), served as PNG grids (serve/gan_app.py), drawn by ``keel sample``."""

from __future__ import annotations

from torchkeel.tasks.base import Task

GENERATE = Task(
    name="generate",
    description="GAN",
    losses=("adversarial",),
    metrics=("frechet",),
    key_metric="frechet",
    lower_is_better=frozenset({"frechet", "d_loss", "g_loss", "loss"}),
    uses=frozenset({"sample", "serve"}),
    output_size=lambda spec: spec.num_classes,
    build_loss=lambda *args, **kwargs: None,
    accumulator=None,
    train_meter=None,
    decode=None,
    loop="gan",
    server="generate",
    refusal_hint="; draw images with `keel sample {run}`",
    report_sections=("gan",),  # sample grids per epoch and the Fréchet curve
    class_targets=True,  # the labelled images it learns from (a conditional GAN is given them)
)
