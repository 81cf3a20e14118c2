"""Augmentation that moves boxes with the pixels (object detection), through torchvision's
``transforms.v2`` and its ``tv_tensors``: each image and its boxes go through the same random
flip and affine map (scale jitter, shift, rotation), the boxes as ``BoundingBoxes`` (a
rotated box becomes the box around its corners), then ``SanitizeBoundingBoxes`` drops those
pushed out of the picture or squeezed under a pixel. Randomness comes from torch's global RNG,
which the run seeds and its checkpoints save, so augmented runs resume exactly.

Zooming in past the border (scale > 1) is the crop of the classic recipes; zooming out
(scale < 1) shows small objects smaller; the uncovered area is 0, the mean of normalised
inputs. Brightness, contrast and cutout act on the pixels only (data/augment.py).
"""

from __future__ import annotations

from typing import Any

import torch

from torchkeel.data.ragged import Ragged

MIN_SIDE = 1.0  # boxes thinner than this after a transform are dropped


def box_transform(flip: bool, rotate: float, translate: float, scale: float) -> Any | None:
    """The per-image v2 pipeline, or None when it has nothing to do."""
    from torchvision.transforms import v2

    steps: list[Any] = []
    if flip:
        steps.append(v2.RandomHorizontalFlip())
    if rotate or translate or scale:
        bilinear = v2.InterpolationMode.BILINEAR  # as data/augment.py's affine; v2's default is nearest
        steps.append(
            v2.RandomAffine(
                degrees=rotate, translate=(translate, translate), scale=(1 - scale, 1 + scale), interpolation=bilinear
            )
        )
    if not steps:
        return None
    return v2.Compose([*steps, v2.SanitizeBoundingBoxes(min_size=MIN_SIDE)])


def boxes_moved(transform: Any):
    """An Augment for a batch of (B, C, H, W) images and their Ragged (n, 6) box rows."""
    from torchvision import tv_tensors

    def both(x: torch.Tensor, y: Ragged) -> tuple[torch.Tensor, Ragged]:
        h, w = x.shape[-2:]
        images, rows = [], []
        for image, t in zip(x.unbind(0), y.items(), strict=True):
            sample = {
                "image": tv_tensors.Image(image),
                "boxes": tv_tensors.BoundingBoxes(t[:, 1:5], format="XYXY", canvas_size=(h, w)),
                "labels": t[:, [0, 5]],  # class and difficult, kept or dropped with their box
            }
            out = transform(sample)
            images.append(out["image"].as_subclass(torch.Tensor))
            kept = out["labels"]
            box = out["boxes"].as_subclass(torch.Tensor).to(t.dtype)
            rows.append(torch.cat([kept[:, :1], box, kept[:, 1:]], 1))
        return torch.stack(images), Ragged.from_list(rows, y.pad_value) if rows else y

    return both
