"""Batched augmentation on the device, with per-sample randomness from torch's global RNG
(seeded by the run and saved in checkpoints, so augmented runs stay reproducible).

Inputs are normalised, so zero is the channel mean: padding, the area an affine transform
uncovers and the cutout square are all filled with the mean.

- crop_size: a random (h, w) window of each sample, the model trained on windows and evaluated
  on whole images (a fully convolutional network sees each object at its full resolution for
  the cost of a smaller input: the segmentation recipe of DeepLab, Chen et al. 2017).
- crop: the classic CIFAR recipe: pad by ``p`` pixels, take a random HxW window per sample.
- flip: mirror left-right with probability 1/2 (off for digits and characters).
- affine: rotate / translate / scale per sample with one ``affine_grid`` + ``grid_sample``.
- cutout: a square of zeros at a random centre (DeVries & Taylor 2017, "Improved
  Regularization of CNNs with Cutout"); it may hang over the border, as in the paper.

- brightness / contrast / saturation / hue: per sample, the [0, 1] pixels scaled by a factor
  in 1 +- brightness, their deviations from the image's mean by 1 +- contrast, and from each
  pixel's grey (ITU-R 601 luma) by 1 +- saturation (torchvision's ColorJitter definitions);
  hues turned by up to ``hue`` of the circle, as a rotation of the chroma plane in YIQ space
  (a linear stand-in for ColorJitter's HSV hue shift, exact for the grey axis). Computed on
  the normalised batch with the data's mean and std: photometric changes a model should not
  care about, such as daylight against dusk. Saturation and hue leave grey images alone.

An augmentation is a function of a batch's (inputs, targets). Targets stay as they are,
except for a task with a prediction per pixel (segmentation: ``Task.dense``), whose masks
move with the pixels: the same flips, crops and affine maps, sampled nearest, with the area
brought in from outside the image marked void (``IGNORE``), so no loss counts it; and for
object detection (``Task.boxes``), whose boxes move with them (data/augment_boxes.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F

from torchkeel.config_data import AugmentConfig
from torchkeel.data.bundle import DataSpec
from torchkeel.data.kinds import kind_of
from torchkeel.errors import ConfigError

Augment = Callable[[torch.Tensor, Any], tuple[torch.Tensor, Any]]
IGNORE = 255  # void target pixels (tasks/segment.py)


def random_crop(x: torch.Tensor, pad: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H, W): each sample shifted by up to ``pad`` pixels."""
    return random_window(F.pad(x, (pad, pad, pad, pad)), tuple(x.shape[-2:]))


def random_window(x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, h, w): a window of ``size`` (h, w) at a random place per sample."""
    b, _, h, w = x.shape
    oy = torch.randint(0, h - size[0] + 1, (b, 1), device=x.device)
    ox = torch.randint(0, w - size[1] + 1, (b, 1), device=x.device)
    rows = (oy + torch.arange(size[0], device=x.device))[:, :, None]  # (B, h, 1)
    cols = (ox + torch.arange(size[1], device=x.device))[:, None, :]  # (B, 1, w)
    batch = torch.arange(b, device=x.device)[:, None, None]
    return x.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)  # (B, C, h, w)


def random_flip(x: torch.Tensor) -> torch.Tensor:
    """Mirror each sample left-right with probability 1/2."""
    flip = torch.rand(x.shape[0], device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def affine(x: torch.Tensor, angle: torch.Tensor, zoom: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Per sample: turn by ``angle`` (B,) radians counter-clockwise (as torchvision's
    ``rotate``), zoom by ``zoom`` (B,), then move by ``shift`` (B, 2) fractions of the width
    and height (positive: right, down). Bilinear; the uncovered area is zero."""
    grid = affine_grid(x, angle, zoom, shift)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def affine_grid(x: torch.Tensor, angle: torch.Tensor, zoom: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """The (B, H, W, 2) sampling grid of :func:`affine`."""
    cos, sin = torch.cos(angle), torch.sin(angle)
    # affine_grid wants the map from output to input coordinates: the inverse of the forward
    # transform p_out = zoom * R p_in + t, i.e. p_in = R^-1 / zoom (p_out - t); y points down
    inverse = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1) / zoom[:, None, None]
    offset = -inverse @ (2 * shift)[:, :, None]  # (B, 2, 1); the image spans 2 grid units
    theta = torch.cat([inverse, offset], 2).to(x.dtype)  # (B, 2, 3)
    return F.affine_grid(theta, list(x.shape), align_corners=False)  # (B, H, W, 2)


def random_affine(x: torch.Tensor, rotate: float = 0.0, translate: float = 0.0, scale: float = 0.0) -> torch.Tensor:
    """Per sample: turn by up to ``rotate`` degrees either way, zoom by a factor in
    [1 - scale, 1 + scale], move by up to ``translate`` of the size in each direction."""
    return affine(x, *_affine_draws(x, rotate, translate, scale))


def _affine_draws(x: torch.Tensor, rotate: float, translate: float, scale: float) -> tuple[torch.Tensor, ...]:
    b = x.shape[0]

    def uniform(limit: float, *shape: int) -> torch.Tensor:  # in [-limit, limit]
        return (torch.rand(b, *shape, device=x.device) * 2 - 1) * limit

    return uniform(math.radians(rotate)), 1 + uniform(scale), uniform(translate, 2)


def random_affine_masks(
    x: torch.Tensor, y: torch.Tensor, rotate: float = 0.0, translate: float = 0.0, scale: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`random_affine` of images (bilinear) and their (B, H, W) masks (nearest, with
    the uncovered area void)."""
    grid = affine_grid(x, *_affine_draws(x, rotate, translate, scale))
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    shifted = (y + 1).to(x.dtype)[:, None]  # 0 outside the image after sampling
    moved = F.grid_sample(shifted, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    moved = moved[:, 0].round().long() - 1
    return x, moved.masked_fill(moved < 0, IGNORE)


LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 weights of R, G, B in grey (as torchvision's rgb_to_grayscale)
_RGB_TO_YIQ = ((0.299, 0.587, 0.114), (0.595716, -0.274453, -0.321263), (0.211456, -0.522591, 0.311135))


def photometric(
    x: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    brightness: float,
    contrast: float,
    saturation: float = 0.0,
    hue: float = 0.0,
) -> torch.Tensor:
    """Random brightness, contrast, saturation and hue per sample on normalised images (B, C,
    H, W): back to [0, 1] pixels p = x * std + mean, p' = c * (b * p - m) + m with m the
    image's mean of b * p over all channels and pixels, then (colour images) each pixel's
    deviation from its grey scaled by s and its chroma turned, and normalised again; not
    clamped, so no value is lost."""
    b = x.shape[0]
    view = (1, -1, 1, 1)
    mean, std = mean.to(x).view(view), std.to(x).view(view)
    pixels = x * std + mean

    def factor(strength: float) -> torch.Tensor:
        return 1 + (torch.rand(b, 1, 1, 1, device=x.device) * 2 - 1) * strength

    if brightness:
        pixels = pixels * factor(brightness)
    if contrast:
        centre = pixels.mean(dim=(1, 2, 3), keepdim=True)
        pixels = (pixels - centre) * factor(contrast) + centre
    if x.shape[1] == 3 and saturation:
        grey = torch.einsum("bchw,c->bhw", pixels, torch.tensor(LUMA).to(x))[:, None]
        pixels = grey + (pixels - grey) * factor(saturation)
    if x.shape[1] == 3 and hue:
        pixels = _turn_hue(pixels, (factor(hue).view(b) - 1) * 2 * math.pi)
    return (pixels - mean) / std


def _turn_hue(pixels: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rotate each image's (I, Q) chroma by its ``angle`` (radians), luma kept."""
    to_yiq = torch.tensor(_RGB_TO_YIQ).to(pixels)
    cos, sin = angle.cos(), angle.sin()
    one, zero = torch.ones_like(cos), torch.zeros_like(cos)
    turn = torch.stack(
        [torch.stack([one, zero, zero], -1), torch.stack([zero, cos, -sin], -1), torch.stack([zero, sin, cos], -1)], -2
    )  # (B, 3, 3)
    maps = torch.linalg.inv(to_yiq) @ turn @ to_yiq  # RGB -> YIQ, turn, back: (B, 3, 3)
    return torch.einsum("bij,bjhw->bihw", maps, pixels)


def with_masks(step: Callable[[torch.Tensor], torch.Tensor]) -> Augment:
    """A step that only moves or mirrors pixels (crop, flip), applied to images and masks at
    once: the mask rides along as one more channel; what padding brings in becomes void."""

    def both(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        moved = step(torch.cat([x, (y + 1).to(x.dtype)[:, None]], 1))
        mask = moved[:, -1].round().long() - 1
        return moved[:, :-1], mask.masked_fill(mask < 0, IGNORE)

    return both


def inputs_only(step: Callable[[torch.Tensor], torch.Tensor]) -> Augment:
    return lambda x, y: (step(x), y)


def cutout(x: torch.Tensor, size: int) -> torch.Tensor:
    """Zero a ``size`` x ``size`` square per sample, centred anywhere in the image."""
    b, _, h, w = x.shape
    cy = torch.randint(0, h, (b, 1, 1), device=x.device)
    cx = torch.randint(0, w, (b, 1, 1), device=x.device)
    rows = torch.arange(h, device=x.device)[None, :, None]  # (1, H, 1)
    cols = torch.arange(w, device=x.device)[None, None, :]  # (1, 1, W)
    top, left = cy - size // 2, cx - size // 2
    inside = (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size)  # (B, H, W)
    return x.masked_fill(inside[:, None], 0.0)


def build_augment(cfg: AugmentConfig, spec: DataSpec) -> Augment | None:
    """The configured steps as one function of a batch's (B, C, H, W) images and targets, or
    None when there is nothing to do. ``flip: null`` follows the data (``spec.extra["flip"]``;
    off if unknown). Masks (a dense task's targets) move with the pixels."""
    from torchkeel.tasks import task_of

    if not kind_of(spec).pixels:  # crops and flips are for images
        return None
    flip = cfg.flip if cfg.flip is not None else bool(spec.extra.get("flip", False))
    moves = with_masks if task_of(spec).dense else inputs_only
    steps: list[Augment] = []
    if task_of(spec).boxes:  # boxes move with the pixels (data/augment_boxes.py); a crop is a zoom there
        from torchkeel.data.augment_boxes import box_transform, boxes_moved

        transform = box_transform(flip, cfg.rotate, cfg.translate, cfg.scale)
        if transform is not None:
            steps.append(boxes_moved(transform))
        if cfg.crop_size is not None:
            raise ConfigError("data.augment.crop_size: box_folder zooms with data.augment.scale instead; unset it")
        flip, cfg = False, cfg.model_copy(update={"crop": 0, "rotate": 0.0, "translate": 0.0, "scale": 0.0})
    if cfg.crop_size is not None:
        window = (cfg.crop_size,) * 2 if isinstance(cfg.crop_size, int) else tuple(cfg.crop_size)
        if any(a > b for a, b in zip(window, spec.input_shape[-2:], strict=True)):
            raise ConfigError(
                f"data.augment.crop_size {list(window)} is larger than the images ({spec.input_shape[-2]}x"
                f"{spec.input_shape[-1]}): set it to at most their size"
            )
        steps.append(moves(partial(random_window, size=window)))
    if cfg.crop:
        steps.append(moves(partial(random_crop, pad=cfg.crop)))
    if flip:
        steps.append(moves(random_flip))
    if cfg.rotate or cfg.translate or cfg.scale:
        geometry = {"rotate": cfg.rotate, "translate": cfg.translate, "scale": cfg.scale}
        dense = task_of(spec).dense
        steps.append(
            partial(random_affine_masks, **geometry) if dense else inputs_only(partial(random_affine, **geometry))
        )
    if cfg.brightness or cfg.contrast or cfg.saturation or cfg.hue:
        mean = torch.tensor(spec.mean if spec.mean is not None else [0.0] * spec.input_shape[0])
        std = torch.tensor(spec.std if spec.std is not None else [1.0] * spec.input_shape[0])
        strengths = {k: getattr(cfg, k) for k in ("brightness", "contrast", "saturation", "hue")}
        colour = partial(photometric, mean=mean, std=std, **strengths)
        steps.append(inputs_only(colour))
    if cfg.cutout:
        steps.append(inputs_only(partial(cutout, size=cfg.cutout)))  # hides pixels; the targets stand
    if not steps:
        return None

    def augment_batch(x: torch.Tensor, y: Any) -> tuple[torch.Tensor, Any]:
        for step in steps:
            x, y = step(x, y)
        return x, y

    return augment_batch


def augment(x: torch.Tensor, y: Any, cfg: AugmentConfig, spec: DataSpec | None = None) -> tuple[torch.Tensor, Any]:
    """Every configured step on a batch (``flip: null`` counts as off without a ``spec``)."""
    fn = build_augment(cfg, spec or DataSpec("", "image", "classification", tuple(x.shape[1:])))
    return fn(x, y) if fn is not None else (x, y)


def is_active(cfg: AugmentConfig) -> bool:
    return any(getattr(cfg, k) for k in type(cfg).model_fields)
