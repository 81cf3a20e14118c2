"""How a ``POST /predict`` request becomes model inputs, per kind of data (``DataSpec.kind``).

An :class:`InputKind` names the content types it takes, decodes a request's parts into
preprocessed samples (per request, on a worker thread) and collates samples into one batch
(on the inference thread), with the preprocessing of ``serve.predictor`` (images, texts,
table rows). Serving a new kind of data means writing those two functions and adding an
entry to ``INPUT_KINDS``; the app, the batching and the web page stay as they are. No web
imports.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from torchkeel.data.bundle import DataSpec
from torchkeel.data.images import normalise
from torchkeel.errors import DataError
from torchkeel.serve.predictor import decode_image, image_size, table_inputs, text_inputs

MAX_FILES = 16  # uploads per request
MAX_ITEMS = 256  # texts or table rows per request


class RequestError(DataError):
    """A request the server cannot use; ``status`` is the HTTP status it answers with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class Upload:
    field: str  # the multipart field, or "body" for a raw request body
    filename: str
    data: bytes


@dataclass
class Payload:
    """What a request carried: uploads, form fields, or a parsed JSON body."""

    uploads: list[Upload] = field(default_factory=list)
    fields: dict[str, str] = field(default_factory=dict)
    json: Any = None

    def size(self) -> int:
        """Bytes uploaded (JSON bodies count as small)."""
        return sum(len(u.data) for u in self.uploads)


@dataclass
class Sample:
    x: torch.Tensor  # one preprocessed input, (*input_shape)
    source: str
    note: str = ""
    size: tuple[int, int] | None = None  # an image's (height, width) as sent: detection maps its boxes back


@dataclass(frozen=True)
class InputKind:
    accepts: str  # for error messages, /info and the docs
    content_types: tuple[str, ...]  # a trailing "/" accepts every subtype (image/)
    decode: Callable[[Payload, DataSpec], list[Sample]]
    collate: Callable[[list[torch.Tensor], DataSpec], torch.Tensor]

    def takes(self, content_type: str) -> bool:
        return any(content_type == t or (t.endswith("/") and content_type.startswith(t)) for t in self.content_types)


def file_uploads(payload: Payload, what: str) -> list[Upload]:
    """The uploaded files (multipart field ``file``, repeatable, or a raw body), each non-empty,
    at most MAX_FILES; ``what`` names them in the errors ("image", "sound")."""
    uploads = [u for u in payload.uploads if u.field in ("file", "body")]
    if not uploads:
        given = ", ".join(sorted({u.field for u in payload.uploads} | set(payload.fields))) or "none"
        raise RequestError(f"missing field 'file' (fields given: {given}): upload the {what} as field 'file'", 422)
    if len(uploads) > MAX_FILES:
        noun = "images" if what == "image" else f"{what} files"
        raise RequestError(f"{len(uploads)} {noun} in one request; at most {MAX_FILES}", 413)
    for upload in uploads:
        if not upload.data:
            raise RequestError(f"{upload.filename}: the file is empty")
    return uploads


def decode_images(payload: Payload, spec: DataSpec) -> list[Sample]:
    """Multipart field ``file`` (repeatable) or a raw image body -> (C, H, W) in [0, 1]."""
    samples = []
    for upload in file_uploads(payload, "image"):
        x, note = decode_image(io.BytesIO(upload.data), spec, upload.filename)
        samples.append(Sample(x, upload.filename, note, image_size(io.BytesIO(upload.data))))
    return samples


def collate_images(xs: list[torch.Tensor], spec: DataSpec) -> torch.Tensor:
    return normalise(torch.stack(xs), spec.mean, spec.std)  # (B, C, H, W), as in training


def _json_items(payload: Payload, one: str, many: str) -> list[Any]:
    """``{"<one>": x}`` or ``{"<many>": [x, ...]}`` from a JSON body (a raw text body is one text)."""
    body = payload.json
    if body is None and payload.uploads:  # text/plain: the body is the text
        return [payload.uploads[0].data.decode("utf-8", errors="replace")]
    if not isinstance(body, dict) or not ({one, many} & body.keys()):
        raise RequestError(f'send a JSON object with "{one}" (one) or "{many}" (a list)', 422)
    items = body[many] if many in body else [body[one]]
    if not isinstance(items, list) or not items:
        raise RequestError(f'"{many}" must be a non-empty list', 422)
    if len(items) > MAX_ITEMS:
        raise RequestError(f"{len(items)} items in one request; at most {MAX_ITEMS}", 413)
    return items


def decode_texts(payload: Payload, spec: DataSpec) -> list[Sample]:
    """JSON ``{"text": "..."}`` / ``{"texts": [...]}`` or a text/plain body -> (L,) token ids."""
    texts = _json_items(payload, "text", "texts")
    if any(not isinstance(t, str) for t in texts):
        raise RequestError("every text must be a string", 422)
    if any(not t.strip() for t in texts):
        raise RequestError("empty text: send some words")
    x = text_inputs(texts, spec)  # (N, L)
    return [Sample(row, t if len(t) <= 60 else t[:57] + "...") for row, t in zip(x, texts, strict=True)]


def decode_rows(payload: Payload, spec: DataSpec) -> list[Sample]:
    """JSON ``{"row": {column: value}}`` / ``{"rows": [...]}`` -> (features,) encoded rows."""
    import pandas as pd

    from torchkeel.data.table_encoder import TableEncoder

    rows = _json_items(payload, "row", "rows")
    if any(not isinstance(r, dict) for r in rows):
        raise RequestError("every row must be a JSON object of column: value", 422)
    encoder = TableEncoder.from_dict(spec.extra["table"]["encoder"])
    check_row_values(rows, encoder)
    with np.errstate(over="ignore"):  # a number beyond float32 becomes inf, refused below
        x = table_inputs(pd.DataFrame(rows), spec, "request")  # (N, features)
    bad = (~torch.isfinite(x)).nonzero()
    if len(bad):  # a number beyond float32 (3.4e38), or a text such as "1e999" or "inf"
        row, feature = bad[0].tolist()
        name = encoder.feature_names[feature]
        raise RequestError(
            f"row {row + 1}, column '{name}': {_shown(rows[row].get(name))} is not a finite float32 number", 422
        )
    return [Sample(row, f"row {i + 1}") for i, row in enumerate(x)]


def check_row_values(rows: list[dict[str, Any]], encoder: Any) -> None:
    """Each value a row gives for one of the model's columns is one JSON scalar of the
    column's type: a number (or a text, read as a CSV cell is, or null for a missing value)
    for a numeric column; a text, number, true/false or null for a category column."""
    numeric = {c.name for c in encoder.numeric}
    for i, row in enumerate(rows, start=1):
        for name in encoder.columns:
            value = row.get(name)
            if value is None or isinstance(value, str):
                continue
            if name not in numeric and not isinstance(value, int | float):  # bool is an int
                raise RequestError(
                    f"row {i}, column '{name}' takes one value (a text, a number or null), not {_shown(value)}", 422
                )
            if name in numeric and (isinstance(value, bool) or not _is_finite_number(value)):
                raise RequestError(
                    f"row {i}, column '{name}' takes a number (or null when missing), not {_shown(value)}", 422
                )


def _is_finite_number(value: Any) -> bool:
    try:
        return isinstance(value, int | float) and math.isfinite(float(value))
    except OverflowError:  # an integer beyond float64
        return False


def _shown(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def decode_sounds(payload: Payload, spec: DataSpec) -> list[Sample]:
    """Multipart field ``file`` (repeatable) or a raw WAV/FLAC/OGG body -> (2, T): the clip at
    the run's sample rate, cut at its longest duration, and its mask."""
    from torchkeel.serve.predictor import audio_inputs

    samples = []
    for upload in file_uploads(payload, "sound"):
        x, notes = audio_inputs([io.BytesIO(upload.data)], [upload.filename], spec)
        samples.append(Sample(x[0], upload.filename, notes[0]))
    return samples


def collate_sounds(xs: list[torch.Tensor], spec: DataSpec) -> torch.Tensor:
    """(B, 2, T): clips zero-padded (mask 0) to the longest in the batch."""
    length = max(x.shape[-1] for x in xs)
    return torch.stack([torch.nn.functional.pad(x, (0, length - x.shape[-1])) for x in xs])


def collate_stack(xs: list[torch.Tensor], spec: DataSpec) -> torch.Tensor:
    return torch.stack(xs)  # already preprocessed: (B, *input_shape)


INPUT_KINDS: dict[str, InputKind] = {
    "image": InputKind(
        "an image (PNG, JPEG, BMP, WEBP) as multipart/form-data field 'file', or the raw bytes "
        "with an image/* content type",
        ("multipart/form-data", "image/", "application/octet-stream"),
        decode_images,
        collate_images,
    ),
    "text": InputKind(
        'JSON {"text": "..."} or {"texts": ["...", ...]} (application/json), or the text itself (text/plain)',
        ("application/json", "text/plain"),
        decode_texts,
        collate_stack,
    ),
    "table": InputKind(
        'JSON {"row": {"column": value, ...}} or {"rows": [{...}, ...]} (application/json)',
        ("application/json",),
        decode_rows,
        collate_stack,
    ),
    "audio": InputKind(
        "a sound file (WAV, FLAC, OGG) as multipart/form-data field 'file', or the raw bytes with an audio/* "
        "content type",
        ("multipart/form-data", "audio/", "application/octet-stream"),
        decode_sounds,
        collate_sounds,
    ),
}
