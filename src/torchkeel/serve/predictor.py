"""Prediction from a run folder: preprocessing exactly as in training, then top-k.

No web imports here: ``keel predict``, the server and the exporters share this.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import nn

from torchkeel.data.bundle import DataSpec
from torchkeel.data.decode import allow_pixels
from torchkeel.data.images import normalise
from torchkeel.data.kinds import kind_of
from torchkeel.errors import DataError
from torchkeel.tasks import task_of

# refuse images whose header declares more pixels than this before decoding them (a
# decompression bomb is a small file that decodes to gigabytes); Predictor(max_pixels=...) and
# `keel predict --max-pixels` change it
MAX_PIXELS = 40_000_000
# the formats predict decodes; Pillow's other plugins (EPS through Ghostscript, PSD, ...) are
# more attack surface than a model input needs
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "WEBP")


@dataclass
class Prediction:
    """One input's prediction: ``output`` is the task's JSON (``Task.decode``), e.g.
    ``{"top": [{"class": "7", "probability": 0.98}, ...]}`` or ``{"value": [3.2]}``; the CLI,
    the server and the page all show this same object."""

    source: str
    output: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    @property
    def top(self) -> list[tuple[str, float]]:
        """(class, probability) pairs, best first; empty for a task without classes."""
        return [(c["class"], c["probability"]) for c in self.output.get("top", [])]

    @property
    def value(self) -> list[float] | None:
        return self.output.get("value")

    @property
    def text(self) -> str | None:
        """The task's text output (a transcript, a translation), if it has one (a picture's
        data URL, such as a segmentation's mask, is not text)."""
        return next((v for v in self.output.values() if isinstance(v, str) and not v.startswith("data:")), None)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, **self.output} | ({"note": self.note} if self.note else {})

    def is_finite(self) -> bool:
        numbers = self.value if self.value is not None else [p for _, p in self.top]
        return all(math.isfinite(x) for x in numbers)


class Predictor:
    def __init__(self, model: nn.Module, spec: DataSpec, top_k: int = 3, max_pixels: int | None = None):
        self.model, self.spec, self.top_k = model.eval(), spec, top_k
        self.max_pixels = max_pixels or MAX_PIXELS
        self.device = next(model.parameters()).device
        self.task = task_of(spec)

    @classmethod
    def from_run(
        cls,
        run_dir: Path,
        top_k: int = 3,
        device: str = "cpu",
        max_pixels: int | None = None,
        model_cls: Any = None,
    ) -> Predictor:
        """``model_cls``: for a run of your own model, its class (or target string): loading a
        run never imports the code it names."""
        from torchkeel.run_model import load_model, run_task

        model, spec, _ = load_model(run_dir, device, model_cls)
        run_task(spec, "predict", run_dir)
        return cls(model, spec, top_k, max_pixels)

    @torch.inference_mode()
    def predict_batch(
        self,
        x: torch.Tensor,
        sources: list[str],
        notes: list[str] | None = None,
        sizes: list[tuple[int, int] | None] | None = None,
    ) -> list[Prediction]:
        """``x``: (N, *input_shape), already preprocessed; ``sizes``: images' (height, width) as
        read, where the task gives its predictions in the image's own pixels (boxes)."""
        out = self.model(x.to(self.device))
        out = out.float() if out.is_floating_point() else out  # token ids (a translation) stay ids
        notes = notes or [""] * len(sources)
        outputs = self.task.decode(out, self.spec, self.top_k)  # the task's JSON per input
        if self.task.to_image is not None and sizes is not None:
            outputs = [
                o if s is None else self.task.to_image(o, self.spec, s) for o, s in zip(outputs, sizes, strict=True)
            ]
        return [Prediction(s, o, n) for s, o, n in zip(sources, outputs, notes, strict=True)]

    def _require_kind(self, capability: str, what: str) -> None:
        if not getattr(kind_of(self.spec), capability):
            raise DataError(f"this model takes {self.spec.kind} data, not {what}")

    def predict_images(self, paths: list[str | Path]) -> list[Prediction]:
        self._require_kind("pixels", "image files")
        images, notes = zip(*(load_image(p, self.spec, self.max_pixels) for p in paths), strict=True)
        x = normalise(torch.stack(images), self.spec.mean, self.spec.std)
        return self.predict_batch(x, [str(p) for p in paths], list(notes), [image_size(p) for p in paths])

    def predict_audio(self, sources: list[Any], names: list[str] | None = None) -> list[Prediction]:
        """Sound files (WAV/FLAC/OGG paths or binary file objects), resampled to the run's rate."""
        self._require_kind("waveform", "sound files")
        names = names or [str(s) for s in sources]
        x, notes = audio_inputs(sources, names, self.spec)
        return self.predict_batch(x, names, notes)

    def predict_rows(self, frame: Any, source: str = "rows") -> list[Prediction]:
        """Table models: one prediction per row of a pandas DataFrame, whose columns are
        encoded with the train split's statistics stored in the DataSpec."""
        self._require_kind("features", "table rows")
        x = table_inputs(frame, self.spec, source)  # (N, features)
        names = [f"{source}:{i + 2}" for i in range(len(frame))]  # the row's line in a CSV with a header
        return [
            p for at in range(0, len(x), 4096) for p in self.predict_batch(x[at : at + 4096], names[at : at + 4096])
        ]

    def predict_table(
        self, path: str | Path, output: str | Path | None = None, force: bool = False
    ) -> tuple[Path, list[Prediction]]:
        """Predict every row of a CSV/TSV/JSON-lines/Parquet file; write the rows, their values
        exactly as in the file, with ``predicted_<target>`` (and ``probability``) columns added
        to ``output`` as CSV (default: ``<input>.predictions.csv`` beside the input). The input
        is never written over; an existing ``output`` only with ``force``."""
        from torchkeel import atomic
        from torchkeel.data.frames import read_frame, read_verbatim

        path = Path(path)
        output = predictions_path(path, output)
        atomic.check_output(output, "--output", inputs=[path], force=force)
        results = self.predict_rows(read_frame(path, "predict"), str(path))
        table = read_verbatim(path)
        if len(table) != len(results):  # both readers skip the same blank lines; a guard all the same
            raise DataError(f"{path}: its rows could not be read the same way twice; save it as plain CSV")
        target = self.spec.extra["table"]["target"]
        if results and results[0].value is not None:  # values (regression), else classes
            _add_column(table, f"predicted_{target}", [r.value[0] for r in results])
        else:
            _add_column(table, f"predicted_{target}", [r.top[0][0] for r in results])
            _add_column(table, "probability", [round(r.top[0][1], 6) for r in results])
        atomic.write_text(output, table.to_csv(index=False, lineterminator="\n"))
        return output, results

    def predict_texts(self, texts: list[str], sources: list[str] | None = None) -> list[Prediction]:
        """Text models: tokenised with the run's own tokeniser, truncated/padded to its length."""
        self._require_kind("token_ids", "text")
        x = text_inputs(texts, self.spec)  # (N, L) token ids
        sources = sources or [t if len(t) <= 60 else t[:57] + "..." for t in texts]
        return self.predict_batch(x, sources)

    def predict_text_files(self, paths: list[str | Path]) -> list[Prediction]:
        """Every non-blank line of each file is one text (UTF-8; other bytes are replaced, with a warning)."""
        from torchkeel.data.frames import decode_text

        texts, sources = [], []
        for path in map(Path, paths):
            if not path.is_file():
                raise DataError(f"{path}: no such file")
            for number, line in enumerate(decode_text(path.read_bytes(), path).splitlines(), start=1):
                if line.strip():
                    texts.append(line)
                    sources.append(f"{path}:{number}")
        if not texts:
            raise DataError(f"no text in {', '.join(map(str, paths))}: give one text per line")
        return self.predict_texts(texts, sources)


def audio_inputs(sources: list[Any], names: list[str], spec: DataSpec) -> tuple[torch.Tensor, list[str]]:
    """Sound files (paths or binary file objects) -> (N, 2, T) at the run's sample rate, each cut
    at the run's longest duration (a note says so), padded to the longest of them."""
    from torchkeel.data.audio import pad_clips, read_audio

    rate, limit = int(spec.extra["sample_rate"]), float(spec.extra["max_seconds"])
    clips = [read_audio(src, rate, name, limit)[0] for src, name in zip(sources, names, strict=True)]
    notes = [f"cut at {limit:g} s (data.audio.max_seconds of the run)" if len(c) > limit * rate else "" for c in clips]
    length = min(max(len(c) for c in clips), int(limit * rate))
    return pad_clips(clips, length), notes


def predictions_path(path: Path, output: str | Path | None = None) -> Path:
    """Where ``predict_table`` writes: ``output``, or ``<input>.predictions.csv`` beside it."""
    return Path(output) if output is not None else path.with_name(f"{path.stem}.predictions.csv")


def _add_column(table: Any, name: str, values: list[Any]) -> None:
    """A new last column; a name the user's file already has gets a suffix (_2, _3, ...)
    rather than replacing the user's column."""
    taken, unique, n = set(map(str, table.columns)), name, 1
    while unique in taken:
        n += 1
        unique = f"{name}_{n}"
    table[unique] = values


def text_inputs(texts: list[str], spec: DataSpec) -> torch.Tensor:
    """Texts -> (N, L) token ids with the run's own tokeniser, truncated/padded to its length."""
    from torchkeel.data.tokenize import encode_texts, tokenizer_from_dict

    tokenizer = tokenizer_from_dict(spec.extra["tokenizer"])
    return encode_texts(tokenizer, texts, spec.input_shape[0])[0]


def table_inputs(frame: Any, spec: DataSpec, source: str = "rows") -> torch.Tensor:
    """Rows of a pandas DataFrame -> (N, features), encoded with the train split's statistics."""
    from torchkeel.data.frames import require_columns
    from torchkeel.data.table_encoder import TableEncoder

    encoder = TableEncoder.from_dict(spec.extra["table"]["encoder"])
    require_columns(frame, encoder.columns, "predict", source)
    return encoder.transform(frame)


def load_image(path: str | Path, spec: DataSpec, max_pixels: int = MAX_PIXELS) -> tuple[torch.Tensor, str]:
    """Decode, convert to the model's channels and size, scale to [0, 1]: (C, H, W).

    The size in the file's header is checked against ``max_pixels`` before any pixel is
    decoded. Data sets with light ink on a dark background (digits, MNIST) mark it in the spec;
    an input that looks the other way round (a dark digit drawn on white) is inverted.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    return decode_image(path, spec, str(path), max_pixels)


def decode_image(
    source: Path | BinaryIO, spec: DataSpec, name: str, max_pixels: int = MAX_PIXELS
) -> tuple[torch.Tensor, str]:
    """:func:`load_image` for a file or an in-memory upload (``io.BytesIO``); ``name`` is
    what error messages call it. Only PNG, JPEG, BMP and WEBP are decoded."""
    from PIL import Image

    c, h, w = spec.input_shape
    allow_pixels(max_pixels)
    try:
        with warnings.catch_warnings():  # Pillow warns above its own limit; ours comes first
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(source, formats=IMAGE_FORMATS)  # reads the header only
        with img:
            if img.width * img.height > max_pixels:
                raise DataError(
                    f"{name}: {img.width}x{img.height} pixels is over the limit of {max_pixels:,} "
                    "(raise it with --max-pixels if the image is genuine)"
                )
            img = img.convert("L" if c == 1 else "RGB")
            if "resize" not in spec.extra:  # sets trained at their own size (digits): PIL's resize
                img = img.resize((w, h), Image.Resampling.BILINEAR, reducing_gap=2.0)
            data = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(img.height, img.width, c)
    except DataError:
        raise
    except Image.DecompressionBombError as e:  # Pillow's own (larger) limit, checked as it reads the header
        declared = re.search(r"\((\d+) pixels\)", str(e))
        size = f"{int(declared.group(1)):,} pixels" if declared else "its size"
        raise DataError(f"{name}: {size} is over the limit of {max_pixels:,}") from None
    except Exception as e:  # Pillow reports a damaged file as any of a dozen types (OSError, SyntaxError, ...)
        raise DataError(
            f"{name}: not a readable image ({type(e).__name__}); give a PNG, JPEG, BMP or WEBP file"
        ) from None
    pixels = data.permute(2, 0, 1)  # (C, h, w) uint8
    if "resize" in spec.extra:  # resized in training: the very same resize (and crop)
        from torchkeel.data.resize import fit_size

        pixels = fit_size(pixels, (h, w), spec.extra["resize"])
    x = pixels.float() / 255.0  # (C, H, W)
    note = ""
    if spec.extra.get("background") == "dark" and _border_mean(x) > 0.5:
        x, note = 1.0 - x, "inverted: light background"
    return x, note


def image_size(source: str | Path | BinaryIO) -> tuple[int, int] | None:
    """An image's (height, width) from its header; None if it cannot be read."""
    from PIL import Image

    try:
        with Image.open(source) as img:
            return img.height, img.width
    except Exception:  # the decode that came first has reported the file already
        return None


def _border_mean(x: torch.Tensor) -> float:
    border = torch.cat([x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1]], dim=1)
    return border.mean().item()
