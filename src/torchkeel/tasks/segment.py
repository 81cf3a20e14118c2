"""Semantic segmentation: a class for every pixel.

Targets are int64 (N, H, W) class indices with ``IGNORE`` (255) on void pixels, which no loss
or metric counts; a model maps (B, C, H, W) images to (B, K, H, W) logits at the image's size.
Every metric comes from one dataset-level confusion matrix (K x K pixel counts, on the device,
all-reducible under DDP): pixel accuracy, IoU and Dice per class and their means over the
classes present in the targets or the predictions (a class absent from both has no IoU).
"""

from __future__ import annotations

import base64
import io
from typing import Any

import torch
import torch.nn.functional as F

from torchkeel.tasks.base import Task
from torchkeel.tasks.meter import TrainMeter, add_loss

IGNORE = 255  # void pixels in the targets (data/masks.py maps the data's own void value here)
METRICS = ("pixel_accuracy", "miou", "mean_dice")
DICE_SMOOTH = 1.0  # added to the numerator and denominator of each class's soft Dice


def soft_dice_loss(out: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """1 - the mean over classes of the soft Dice of softmax(out) with the one-hot targets,
    summed over the batch and every labelled pixel ("batch Dice", as nnU-Net computes it);
    ``weights`` weigh the classes' terms."""
    k = out.shape[1]
    labelled = (y != IGNORE).unsqueeze(1)  # (B, 1, H, W)
    probs = out.float().softmax(1) * labelled
    target = F.one_hot(y.masked_fill(y == IGNORE, 0), k).permute(0, 3, 1, 2) * labelled  # (B, K, H, W)
    dims = (0, 2, 3)
    overlap = (probs * target).sum(dims)
    total = probs.sum(dims) + target.sum(dims)
    dice = (2 * overlap + DICE_SMOOTH) / (total + DICE_SMOOTH)  # (K,)
    if weights is None:
        return 1 - dice.mean()
    return 1 - (dice * weights).sum() / weights.sum()


def build_loss(name: str, spec: Any, label_smoothing: float = 0.0, weights: torch.Tensor | None = None):
    """Pixel cross-entropy, soft Dice, or their sum (``ce_dice``, nnU-Net's default loss,
    Isensee et al. 2021); void pixels count in neither; class weights weigh both."""

    def cross_entropy(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out, y, weight=weights, ignore_index=IGNORE, label_smoothing=label_smoothing)

    if name == "cross_entropy":
        return cross_entropy
    if name == "dice":
        return lambda out, y: soft_dice_loss(out, y, weights)
    return lambda out, y: cross_entropy(out, y) + soft_dice_loss(out, y, weights)


def confusion_of(pred: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """(K, K) pixel counts, rows the true class and columns the predicted, void pixels left out."""
    keep = y != IGNORE
    return torch.bincount(y[keep] * k + pred[keep], minlength=k * k).view(k, k)


def class_scores_of(confusion: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per class IoU = TP / (TP + FP + FN) and Dice = 2 TP / (2 TP + FP + FN), and the mask of
    classes present in the targets or the predictions (the others' scores are undefined, 0 here)."""
    cm = confusion.double()
    tp = cm.diag()
    union = cm.sum(0) + cm.sum(1) - tp  # TP + FP + FN
    present = union > 0
    iou = torch.where(present, tp / union.clamp_min(1), 0.0)
    dice = torch.where(present, 2 * tp / (union + tp).clamp_min(1), 0.0)
    return iou, dice, present


def chosen_metrics(names: list[str], spec: Any = None) -> list[str]:
    """The segmentation metrics of ``names``; all three when it names none of them but the
    key metric (``eval.metrics``' default is the classifiers')."""
    own = [n for n in names if n in METRICS]
    return list(METRICS) if own in ([], ["miou"]) else own


class SegmentationAccumulator:
    def __init__(self, spec: Any, names: list[str], device: torch.device, top_k: int = 1, *, details: bool = False):
        self.spec = spec
        self.names = chosen_metrics(names)
        k = spec.num_classes
        self.sums = torch.zeros(2, dtype=torch.float64, device=device)  # [loss sum, images]
        self.has_loss = False
        self.confusion = torch.zeros(k, k, dtype=torch.int64, device=device)

    @torch.no_grad()
    def update(self, out: torch.Tensor, y: torch.Tensor, loss: torch.Tensor | None = None) -> None:
        self.has_loss |= add_loss(self.sums, loss, y.shape[0])
        self.confusion += confusion_of(out.argmax(1), y, self.confusion.shape[0])

    def compute(self) -> dict[str, float]:
        loss_sum, n = self.sums.tolist()
        result = {"loss": loss_sum / max(n, 1)} if self.has_loss else {}
        iou, dice, present = class_scores_of(self.confusion)
        values = {
            "pixel_accuracy": (self.confusion.diag().sum() / self.confusion.sum().clamp_min(1)).item(),
            "miou": iou[present].mean().item() if present.any() else 0.0,
            "mean_dice": dice[present].mean().item() if present.any() else 0.0,
        }
        return result | {k: values[k] for k in self.names}

    def details(self) -> dict[str, Any]:
        """The pixel confusion matrix and per-class IoU, Dice and pixel counts (support)."""
        classes = self.spec.classes or [str(i) for i in range(self.confusion.shape[0])]
        iou, dice, present = class_scores_of(self.confusion)
        support = self.confusion.sum(1).tolist()
        rows = zip(classes, iou.tolist(), dice.tolist(), present.tolist(), support, strict=True)
        return {
            "classes": classes,
            "confusion_matrix": self.confusion.tolist(),
            "per_class": [
                {"class": c, "iou": i if p else None, "dice": d if p else None, "pixels": int(s)}
                for c, i, d, p, s in rows
            ],
        }


def decode(out: torch.Tensor, spec: Any, k: int) -> list[dict[str, Any]]:
    """Per image: the classes it shows with their share of the pixels (largest first), and the
    predicted mask as a PNG of class indices (a data URL, palette mode: viewers show the
    classes' colours)."""
    masks = out.argmax(1).to(torch.uint8).cpu()  # (B, H, W)
    classes = spec.classes or [str(i) for i in range(out.shape[1])]
    results = []
    for mask in masks:
        counts = torch.bincount(mask.view(-1).long(), minlength=len(classes)).tolist()
        shares = sorted(((n / mask.numel(), c) for c, n in zip(classes, counts, strict=True) if n), reverse=True)
        results.append(
            {
                "classes": [{"class": c, "fraction": round(f, 4)} for f, c in shares],
                "mask": mask_png(mask, spec.extra.get("palette")),
                "size": list(mask.shape),
            }
        )
    return results


def mask_png(mask: torch.Tensor, palette: list[list[int]] | None) -> str:
    """(H, W) uint8 class indices as a palette PNG data URL."""
    from PIL import Image

    img = Image.fromarray(mask.numpy()).convert("P")
    if palette:
        img.putpalette([v for colour in palette for v in colour])
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


SEGMENTATION = Task(
    name="segmentation",
    description="semantic segmentation",
    losses=("ce_dice", "cross_entropy", "dice"),
    metrics=METRICS,
    key_metric="miou",
    lower_is_better=frozenset({"loss"}),
    uses=frozenset({"predict", "serve", "export", "eval", "tta", "class_weights", "finetune"}),
    output_size=lambda spec: spec.num_classes,
    build_loss=build_loss,
    accumulator=SegmentationAccumulator,
    train_meter=lambda spec, device: TrainMeter(device, None),
    decode=decode,
    export_output="logits (B, K, H, W): argmax over axis 1 gives each pixel's index into 'classes'",
    adjust_metrics=chosen_metrics,
    report_sections=("segmentation",),
    dense=True,
    refusal_hint="; it predicts a class per pixel (keel predict {run} IMAGE --out mask.png)",
)
