"""Why did the model say that: saliency, Grad-CAM (in torch), integrated gradients (through captum).

- ``saliency``: |d score / d input|, max over channels (Simonyan et al. 2014).
- ``grad_cam``: the last conv layer's activations weighted by their mean gradient, ReLU,
  upsampled to the input (Selvaraju et al. 2017); needs a model with an ``nn.Conv2d``.
- ``integrated_gradients``: attributions along the path from a baseline (Sundararajan et al.
  2017); for standardised tables the baseline 0 is the training mean.
- ``token_attributions``: integrated gradients through the first ``nn.Embedding`` (text), the
  baseline being all-padding.
The score explained is the logit of ``target`` (default: the predicted class), one per class as
the task gives them (``Task.class_scores``): a one-logit binary model is explained as two logits
(-z, z), so class 0 has its own evidence.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from torchkeel.data.bundle import DataSpec
from torchkeel.data.kinds import kind_of
from torchkeel.errors import DataError
from torchkeel.tasks import task_of


def captum_attr():
    """captum.attr, or a one-line error naming the extra that installs it."""
    try:
        import captum.attr
    except ImportError:
        raise DataError("explanations need captum: pip install 'torchkeel[explain]'") from None
    return captum.attr


def class_scores(model: nn.Module, spec: DataSpec) -> Callable[[torch.Tensor], torch.Tensor]:
    """A forward function with one output per class (binary: (-z, z))."""
    scores = task_of(spec).class_scores
    return model if scores is None else (lambda x: scores(model(x)))


def predicted(model: nn.Module, x: torch.Tensor, spec: DataSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """(class, probability) per input: the softmax of the class scores; for a task without
    classes (regression) (0, nan): target 0 is the first output."""
    with torch.no_grad():
        out = class_scores(model, spec)(x).float()
    if task_of(spec).predict_index is None:
        return torch.zeros(len(x), dtype=torch.long, device=x.device), torch.full((len(x),), float("nan"))
    p, cls = out.softmax(1).max(1)
    return cls, p.cpu()


def last_conv(model: nn.Module) -> nn.Module | None:
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1] if convs else None


def saliency(model: nn.Module, x: torch.Tensor, target: torch.Tensor, spec: DataSpec) -> torch.Tensor:
    """(N, H, W) in [0, 1] per image, for images ``x`` (N, C, H, W): captum's ``Saliency``
    (abs=True) by its definition, in torch alone: the images' maps are what report.html draws,
    and importing captum costs more than computing them (tests/test_explain.py checks both
    against captum)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        (grads,) = torch.autograd.grad(_target_scores(model, x, target, spec), x)  # (N, C, H, W)
    return _unit(grads.abs().amax(1))


def grad_cam(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor, spec: DataSpec, layer: nn.Module | None = None
) -> torch.Tensor:
    """(N, H, W) in [0, 1] per image: Grad-CAM of ``layer`` (default: the last Conv2d), as
    captum's ``LayerGradCam`` (relu_attributions) then bilinear ``LayerAttribution.interpolate``
    compute it: channel weights = mean gradient of the target score over the layer's output,
    ReLU of the weighted sum of its channels, upsampled to the input."""
    layer = layer or last_conv(model)
    if layer is None:
        raise DataError("Grad-CAM needs a convolutional model (an nn.Conv2d layer); this model has none")
    saved: dict[str, torch.Tensor] = {}
    handle = layer.register_forward_hook(lambda module, inputs, out: saved.update(out=out))
    try:
        with torch.enable_grad():
            # the input asks for gradients, so the layer's output has them even when every
            # weight before it is frozen (a transfer model's backbone)
            scores = _target_scores(model, x.detach().requires_grad_(True), target, spec)
            (grads,) = torch.autograd.grad(scores, saved["out"])  # (N, C, h, w)
    finally:
        handle.remove()
    cam = (grads.mean((2, 3), keepdim=True) * saved["out"]).sum(1, keepdim=True).clamp_min(0)  # (N, 1, h, w)
    cam = F.interpolate(cam.detach(), size=tuple(x.shape[-2:]), mode="bilinear")
    return _unit(cam[:, 0])  # (N, H, W)


def _target_scores(model: nn.Module, x: torch.Tensor, target: torch.Tensor, spec: DataSpec) -> torch.Tensor:
    """The sum over the batch of each input's ``target`` class score (one backward pass gives
    every input's gradient: the inputs do not interact in eval mode)."""
    return class_scores(model, spec)(x).gather(1, target.view(-1, 1).to(x.device)).sum()


def integrated_gradients(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor, spec: DataSpec, steps: int = 32
) -> torch.Tensor:
    """Attributions shaped like ``x``, from the all-zero baseline (float inputs)."""
    IntegratedGradients = captum_attr().IntegratedGradients

    with torch.enable_grad():
        attr = IntegratedGradients(class_scores(model, spec)).attribute(
            x, baselines=torch.zeros_like(x), target=target, n_steps=steps, internal_batch_size=4096
        )
    return attr.detach()


def token_attributions(
    model: nn.Module, ids: torch.Tensor, target: torch.Tensor, spec: DataSpec, steps: int = 32
) -> torch.Tensor:
    """(N, L) attribution per token of ``ids`` (N, L) int64, through the first nn.Embedding;
    padding (id 0) gets 0."""
    LayerIntegratedGradients = captum_attr().LayerIntegratedGradients

    embedding = next((m for m in model.modules() if isinstance(m, nn.Embedding)), None)
    if embedding is None:
        raise DataError("token attributions need a model with an nn.Embedding layer")
    pad = int(spec.extra.get("pad_index", 0))
    with torch.enable_grad():
        attr = LayerIntegratedGradients(class_scores(model, spec), embedding).attribute(
            ids, baselines=torch.full_like(ids, pad), target=target, n_steps=steps
        )
    return attr.detach().sum(-1) * (ids != pad)  # (N, L): summed over the embedding dimension


def _unit(maps: torch.Tensor) -> torch.Tensor:
    """Scale each map of (N, ...) to [0, 1] by its own maximum (all-zero maps stay zero)."""
    peak = maps.flatten(1).amax(1).clamp_min(1e-12).view(-1, *([1] * (maps.dim() - 1)))
    return (maps / peak).clamp(0, 1)


def pixels(x: torch.Tensor, spec: DataSpec) -> torch.Tensor:
    """Undo the DataSpec's normalisation: model inputs (N, C, H, W) -> pixel values."""
    if spec.mean is None or spec.std is None:
        return x
    mean = torch.tensor(spec.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return x * std + mean


def explain_images(model: nn.Module, spec: DataSpec, files: list[Path], out_dir: Path) -> list[tuple[Path, str, float]]:
    """``keel explain``: per image file one PNG (input | saliency | Grad-CAM over the input)
    in ``out_dir``; returns (written file, predicted class, probability) per input."""
    from torchkeel import atomic
    from torchkeel.data.images import normalise
    from torchkeel.evaluate import plots
    from torchkeel.serve.predictor import load_image

    if not kind_of(spec).pixels:
        raise DataError(
            f"keel explain takes image files; this model takes {spec.kind} data "
            "(token attributions for text models come with a text predictor)"
        )
    device = next(model.parameters()).device
    raw = torch.stack([load_image(f, spec)[0] for f in files])  # (N, C, H, W) in [0, 1]
    x = normalise(raw, spec.mean, spec.std).to(device)
    cls, prob = predicted(model, x, spec)
    maps = {"saliency": saliency(model, x, cls, spec)}
    if last_conv(model) is not None:
        maps["Grad-CAM"] = grad_cam(model, x, cls, spec)
    classes = spec.classes or [str(i) for i in range(spec.output_size)]
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    has_classes = task_of(spec).predict_index is not None
    for i, f in enumerate(files):
        label = classes[int(cls[i])] if has_classes else "output 0"
        title = f"{Path(f).name}: {label} ({prob[i]:.1%})" if has_classes else Path(f).name
        image = plots.to_display(raw[i : i + 1].numpy())
        one = {k: v[i : i + 1].cpu().numpy() for k, v in maps.items()}
        path = out_dir / f"{Path(f).stem}.explain.png"
        atomic.write_bytes(path, plots.explanations(image, one, [title], overlay=("Grad-CAM",)))
        written.append((path, label, float(prob[i])))
    return written
