"""Prediction from a run folder: preprocessing exactly as in training, then top-k.

No web imports here: ``keel predict``, the server and the exporters share this.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import nn

from torchkeel.data.bundle import DataSpec
from torchkeel.data.images import normalise
from torchkeel.errors import DataError

# refuse images whose header declares more pixels than this before decoding them
# (a decompression bomb is a small file that decodes to gigabytes)
MAX_PIXELS = 40_000_000


@dataclass
class Prediction:
    source: str
    top: list[tuple[str, float]] = field(default_factory=list)  # (class, probability)
    value: list[float] | None = None  # regression outputs
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"source": self.source}
        if self.value is not None:
            d["value"] = self.value
        else:
            d["top"] = [{"class": c, "probability": p} for c, p in self.top]
        if self.note:
            d["note"] = self.note
        return d


class Predictor:
    def __init__(self, model: nn.Module, spec: DataSpec, top_k: int = 3):
        self.model, self.spec, self.top_k = model.eval(), spec, top_k
        self.device = next(model.parameters()).device

    @classmethod
    def from_run(cls, run_dir: Path, top_k: int = 3, device: str = "cpu") -> Predictor:
        from torchkeel.experiment import load_model

        model, spec, _ = load_model(run_dir, device)
        return cls(model, spec, top_k)

    @torch.inference_mode()
    def predict_batch(self, x: torch.Tensor, sources: list[str], notes: list[str] | None = None) -> list[Prediction]:
        """``x``: (N, *input_shape), already preprocessed."""
        out = self.model(x.to(self.device)).float()
        notes = notes or [""] * len(sources)
        if self.spec.task == "regression":
            return [Prediction(s, value=o.tolist(), note=n) for s, o, n in zip(sources, out, notes, strict=True)]
        if self.spec.task == "binary":
            p1 = torch.sigmoid(out.view(-1))
            probs = torch.stack([1 - p1, p1], dim=1)
        else:
            probs = torch.softmax(out, dim=1)
        k = min(self.top_k, probs.shape[1])
        values, indices = probs.topk(k, dim=1)
        classes = self.spec.classes or [str(i) for i in range(probs.shape[1])]
        return [
            Prediction(s, [(classes[i], float(v)) for v, i in zip(vs.tolist(), ix.tolist(), strict=True)], note=n)
            for s, vs, ix, n in zip(sources, values, indices, notes, strict=True)
        ]

    def predict_images(self, paths: list[str | Path]) -> list[Prediction]:
        if self.spec.kind != "image":
            raise DataError(f"this model takes {self.spec.kind} data, not image files")
        images, notes = zip(*(load_image(p, self.spec) for p in paths), strict=True)
        x = normalise(torch.stack(images), self.spec.mean, self.spec.std)
        return self.predict_batch(x, [str(p) for p in paths], list(notes))


def load_image(path: str | Path, spec: DataSpec) -> tuple[torch.Tensor, str]:
    """Decode, convert to the model's channels and size, scale to [0, 1]: (C, H, W).

    Data sets with light ink on a dark background (digits, MNIST) mark it in the spec; an
    input that looks the other way round (a dark digit drawn on white) is inverted.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    return decode_image(path, spec, str(path))


def decode_image(source: Path | BinaryIO, spec: DataSpec, name: str) -> tuple[torch.Tensor, str]:
    """:func:`load_image` for a file or an in-memory upload (``io.BytesIO``); ``name`` is
    what error messages call it."""
    from PIL import Image, UnidentifiedImageError

    c, h, w = spec.input_shape
    try:
        with Image.open(source) as img:
            if img.width * img.height > MAX_PIXELS:
                raise DataError(f"{name}: {img.width}x{img.height} pixels is over the limit of {MAX_PIXELS:,}")
            img = img.convert("L" if c == 1 else "RGB").resize((w, h), Image.Resampling.BILINEAR, reducing_gap=2.0)
            data = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(
            f"{name}: not a readable image ({type(e).__name__}); give a PNG, JPEG, BMP or WEBP file"
        ) from None
    x = data.view(h, w, c).permute(2, 0, 1).float() / 255.0  # (C, H, W)
    note = ""
    if spec.extra.get("background") == "dark" and _border_mean(x) > 0.5:
        x, note = 1.0 - x, "inverted: light background"
    return x, note


def _border_mean(x: torch.Tensor) -> float:
    border = torch.cat([x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1]], dim=1)
    return border.mean().item()
