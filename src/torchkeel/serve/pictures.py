"""Pictures of predictions: a segmentation's mask in its classes' colours over the image.

Masks are at the model's input size, so the overlay is drawn on the image as the model saw it
(resized, and centre-cropped when the run's data was): every coloured pixel is one the model
labelled. ``keel predict --output``, the server's page and the report share these functions.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
import torch

from torchkeel import atomic

ALPHA = 0.5  # the mask's opacity over the image
VOID = 255  # void pixels of target masks (tasks/segment.py IGNORE)


def mask_from_png(data_url: str) -> np.ndarray:
    """(H, W) uint8 class indices from a task's mask data URL (tasks/segment.py)."""
    from PIL import Image

    raw = base64.b64decode(data_url.split(",", 1)[1])
    with Image.open(io.BytesIO(raw)) as img:
        return np.asarray(img.convert("L") if img.mode not in ("L", "P") else img, dtype=np.uint8)


def colours(spec: Any, classes: int) -> np.ndarray:
    """(K, 3) uint8: the data's palette, else evenly spaced hues."""
    palette = spec.extra.get("palette")
    if palette and len(palette) >= classes:
        return np.asarray(palette[:classes], dtype=np.uint8)
    import colorsys

    return np.asarray(
        [[int(255 * v) for v in colorsys.hsv_to_rgb(i / max(classes, 1), 0.75, 0.95)] for i in range(classes)],
        dtype=np.uint8,
    )


def overlay(image: torch.Tensor, mask: np.ndarray, spec: Any) -> np.ndarray:
    """(H, W, 3) uint8: ``image`` ((C, H, W) in [0, 1]) blended with the mask's colours; void
    pixels (255 in a target mask) stay unpainted."""
    rgb = image.expand(3, -1, -1) if image.shape[0] == 1 else image[:3]
    pixels = (rgb.permute(1, 2, 0).clamp(0, 1).numpy() * 255).astype(np.float32)
    void = mask == VOID
    labelled = np.where(void, 0, mask)
    painted = colours(spec, max(spec.num_classes, int(labelled.max()) + 1))[labelled].astype(np.float32)
    blended = pixels * (1 - ALPHA) + painted * ALPHA
    return np.where(void[..., None], pixels, blended).round().astype(np.uint8)


def png_bytes(array: np.ndarray, palette: np.ndarray | None = None) -> bytes:
    from PIL import Image

    img = Image.fromarray(array)
    if palette is not None:
        img = img.convert("P")
        img.putpalette(palette.reshape(-1).tolist())
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def overlay_path(mask_path: Path) -> Path:
    name = mask_path.name.removesuffix(".png").removesuffix(".mask")
    return mask_path.with_name(f"{name}.overlay.png")


def write_mask(output: dict[str, Any], image_path: Path, spec: Any, target: Path) -> list[Path]:
    """The prediction's mask as a class-index PNG (palette mode: viewers show the colours) at
    ``target``, and the overlay beside it; returns both paths."""
    from torchkeel.serve.predictor import load_image

    mask = mask_from_png(output["mask"])
    image, _ = load_image(image_path, spec)
    classes = max(spec.num_classes, int(mask.max()) + 1)
    atomic.write_bytes(target, png_bytes(mask, colours(spec, classes)))
    atomic.write_bytes(overlay_path(target), png_bytes(overlay(image, mask, spec)))
    return [target, overlay_path(target)]
