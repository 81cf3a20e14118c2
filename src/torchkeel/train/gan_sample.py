"""Drawing from a trained GAN: ``keel sample`` (from a run folder) and the generate server
(serve/gan_app.py) share one function, so the same seed gives the same PNG grid in both."""

from __future__ import annotations

from pathlib import Path

import torch

from torchkeel.data.bundle import DataSpec
from torchkeel.errors import RunError
from torchkeel.models.gan import GAN
from torchkeel.train.gan import grid_png


def sample_png(run_dir: Path, n: int, seed: int = 0, label: int | None = None, nrow: int = 8) -> bytes:
    """``n`` samples of a trained GAN run as a PNG grid (``keel sample``)."""
    from torchkeel.run_model import load_model

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
