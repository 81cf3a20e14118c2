"""Accuracy under adversarial perturbation: FGSM and PGD with an L-inf budget in pixel space.

Model inputs are normalised; an attack on them would let ``eps`` mean different things per
channel and step outside the images a camera can produce. So each batch is mapped back to
pixels with the DataSpec's mean and std, perturbed there by at most ``eps`` per pixel, clipped
to [0, 1], and normalised again before the model sees it.

- FGSM (Goodfellow et al. 2015): one step of ``eps * sign(grad)``.
- PGD (Madry et al. 2018): a uniform random start in the eps-ball, then ``steps`` steps of
  ``2.5 * eps / steps`` (the paper's step rule), each projected back onto the ball.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchkeel import atomic
from torchkeel.data.bundle import DataSpec, Split
from torchkeel.data.images import normalise
from torchkeel.data.kinds import kind_of
from torchkeel.errors import DataError
from torchkeel.evaluate.explain import pixels
from torchkeel.tasks import task_of
from torchkeel.train.losses import LossFn

ROBUSTNESS_FILE = "robustness.json"


def fgsm(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, spec: DataSpec, loss_fn: LossFn
) -> torch.Tensor:
    """Adversarial version of the normalised batch ``x`` (N, C, H, W)."""
    p = pixels(x, spec)
    p_adv = (p + eps * _pixel_grad(model, p, y, spec, loss_fn).sign()).clamp(0, 1)
    return normalise(p_adv, spec.mean, spec.std)


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    spec: DataSpec,
    loss_fn: LossFn,
    steps: int = 10,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    p = pixels(x, spec)
    step = 2.5 * eps / steps
    noise = torch.rand(p.shape, generator=generator, dtype=p.dtype).to(p.device) * 2 - 1  # U(-1, 1)
    p_adv = (p + eps * noise).clamp(0, 1)
    for _ in range(steps):
        p_adv = p_adv + step * _pixel_grad(model, p_adv, y, spec, loss_fn).sign()
        p_adv = torch.minimum(torch.maximum(p_adv, p - eps), p + eps).clamp(0, 1)  # project, then valid pixels
    return normalise(p_adv, spec.mean, spec.std)


def _pixel_grad(model: nn.Module, p: torch.Tensor, y: torch.Tensor, spec: DataSpec, loss_fn: LossFn) -> torch.Tensor:
    with torch.enable_grad():
        p = p.detach().requires_grad_(True)
        loss = loss_fn(model(normalise(p, spec.mean, spec.std)), y)
        (grad,) = torch.autograd.grad(loss, p)
    return grad


def attack(
    method: str,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    spec: DataSpec,
    loss_fn: LossFn,
    steps: int = 10,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    if method == "fgsm":
        return fgsm(model, x, y, eps, spec, loss_fn)
    return pgd(model, x, y, eps, spec, loss_fn, steps, generator)


def robustness(
    model: nn.Module,
    split: Split,
    spec: DataSpec,
    loss_fn: LossFn,
    method: str,
    eps: float,
    *,
    steps: int = 10,
    batch_size: int = 512,
    seed: int = 0,
) -> dict[str, Any]:
    """Clean and adversarial accuracy of ``model`` over ``split``."""
    check_attackable(spec)
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    clean = adversarial = 0
    for start in range(0, len(split), batch_size):
        x = split.x[start : start + batch_size].to(device)
        y = split.y[start : start + batch_size].to(device)
        x_adv = attack(method, model, x, y, eps, spec, loss_fn, steps, generator)
        with torch.no_grad():
            clean += _correct(model(x), y, spec)
            adversarial += _correct(model(x_adv), y, spec)
    n = len(split)
    return {
        "method": method,
        "eps": eps,
        "steps": steps if method == "pgd" else 1,
        "samples": n,
        "clean_accuracy": clean / n,
        "adversarial_accuracy": adversarial / n,
    }


def check_attackable(spec: DataSpec) -> None:
    """Attacks need pixels to perturb and a task that predicts classes (its ``uses``)."""
    if not kind_of(spec).pixels:
        raise DataError(f"adversarial attacks perturb images in pixel space; this model takes {spec.kind} data")
    task = task_of(spec)
    if "attack" not in task.uses:
        raise DataError(f"adversarial accuracy needs a classification model; this one does {task.description}")


def _correct(out: torch.Tensor, y: torch.Tensor, spec: DataSpec) -> int:
    pred = task_of(spec).predict_index(out)
    return int((pred == y.long()).sum())


def record_results(run_dir: Path, results: list[dict[str, Any]], split: str) -> list[dict[str, Any]]:
    """Merge ``results`` into the run's robustness.json (a new result replaces the old one
    for the same split, method, eps and steps); return everything recorded."""
    recorded = read_results(run_dir)
    for r in results:
        r = {"split": split, **r}
        same = ("split", "method", "eps", "steps")
        recorded = [old for old in recorded if any(old.get(k) != r[k] for k in same)] + [r]
    recorded.sort(key=lambda r: (r["split"], r["method"], r["steps"], r["eps"]))
    atomic.write_json(run_dir / ROBUSTNESS_FILE, {"results": recorded})
    return recorded


def read_results(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / ROBUSTNESS_FILE
    if not path.is_file():
        return []
    return json.loads(path.read_text(encoding="utf-8")).get("results", [])
