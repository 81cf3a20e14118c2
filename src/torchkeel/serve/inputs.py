"""How a ``POST /predict`` request becomes model inputs, per kind of data (``DataSpec.kind``).

An :class:`InputKind` names the content types it takes, decodes a request's parts into
preprocessed samples (per request, on a worker thread) and collates samples into one batch
(on the inference thread). Serving a new kind of model (text, table) means writing those two
functions with the preprocessing of ``serve.predictor`` and adding an entry to
``INPUT_KINDS``; the app, the batching and the web page stay as they are. No web imports.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from torchkeel.data.bundle import DataSpec
from torchkeel.data.images import normalise
from torchkeel.errors import DataError
from torchkeel.serve.predictor import decode_image

MAX_FILES = 16  # uploads per request


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


@dataclass(frozen=True)
class InputKind:
    accepts: str  # for error messages, /info and the docs
    content_types: tuple[str, ...]  # a trailing "/" accepts every subtype (image/)
    decode: Callable[[Payload, DataSpec], list[Sample]]
    collate: Callable[[list[torch.Tensor], DataSpec], torch.Tensor]

    def takes(self, content_type: str) -> bool:
        return any(content_type == t or (t.endswith("/") and content_type.startswith(t)) for t in self.content_types)


def decode_images(payload: Payload, spec: DataSpec) -> list[Sample]:
    """Multipart field ``file`` (repeatable) or a raw image body -> (C, H, W) in [0, 1]."""
    uploads = [u for u in payload.uploads if u.field in ("file", "body")]
    if not uploads:
        given = ", ".join(sorted({u.field for u in payload.uploads} | set(payload.fields))) or "none"
        raise RequestError(f"missing field 'file' (fields given: {given}): upload the image as field 'file'", 422)
    if len(uploads) > MAX_FILES:
        raise RequestError(f"{len(uploads)} images in one request; at most {MAX_FILES}", 413)
    samples = []
    for upload in uploads:
        if not upload.data:
            raise RequestError(f"{upload.filename}: the file is empty")
        x, note = decode_image(io.BytesIO(upload.data), spec, upload.filename)
        samples.append(Sample(x, upload.filename, note))
    return samples


def collate_images(xs: list[torch.Tensor], spec: DataSpec) -> torch.Tensor:
    return normalise(torch.stack(xs), spec.mean, spec.std)  # (B, C, H, W), as in training


INPUT_KINDS: dict[str, InputKind] = {
    "image": InputKind(
        "an image (PNG, JPEG, BMP, WEBP) as multipart/form-data field 'file', or the raw bytes "
        "with an image/* content type",
        ("multipart/form-data", "image/", "application/octet-stream"),
        decode_images,
        collate_images,
    ),
}
