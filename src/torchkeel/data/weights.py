"""Class weights for imbalanced labels, from the train split only."""

from __future__ import annotations

import torch

from torchkeel.data.bundle import DataBundle
from torchkeel.errors import ConfigError


def balanced_weights(y: torch.Tensor, num_classes: int) -> list[float]:
    """n / (classes * count_c) per class, as scikit-learn's ``class_weight="balanced"``: the
    weighted classes contribute equally to the loss. A class absent from train gets 0."""
    counts = torch.bincount(y.long().cpu(), minlength=num_classes).double()
    weights = torch.where(counts > 0, counts.sum() / (num_classes * counts.clamp_min(1)), 0.0)
    return [round(float(w), 6) for w in weights]


def add_class_weights(bundle: DataBundle) -> None:
    """Store balanced weights in ``spec.extra["class_weights"]``: ``fit`` passes them to the loss.
    Per-pixel targets count pixels per class, leaving out ``spec.extra["ignore_index"]`` (void)."""
    spec = bundle.spec
    from torchkeel.tasks import task_of

    if "class_weights" not in task_of(spec).uses:
        raise ConfigError(f"data.class_weights: data '{spec.name}' is a {spec.task} task; weights need classes")
    y = bundle.train.y
    if (
        isinstance(y, torch.Tensor) and y.ndim > 1
    ):  # a class per pixel (segmentation, (N, H, W)): count the labelled pixels
        y = y.flatten()
        ignore = spec.extra.get("ignore_index")
        y = y[y != ignore] if ignore is not None else y
    spec.extra["class_weights"] = balanced_weights(y, spec.num_classes)
