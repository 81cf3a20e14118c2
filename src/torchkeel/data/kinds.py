"""Data kinds by name: what an input is, independent of the task (what is predicted).

``spec.kind`` names one of ``KINDS``; code outside the data loaders asks its DataKind's
capabilities (``kind_of(spec).pixels``) rather than comparing kind names, so a new kind of
input (audio, say) is one entry here plus its loaders.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DataKind:
    name: str
    pixels: bool = False  # (C, H, W) images in [0, 1] before normalisation: augment, TTA, attacks, saliency
    token_ids: bool = False  # int64 token ids padded to a length: embeddings, a dynamic length axis
    features: bool = False  # a float vector of encoded table columns: integrated gradients per column
    steps: bool = False  # (window, features) float steps of a series
    waveform: bool = False  # (2, T): a mono waveform and its mask (1 where the clip has samples)
    noun: str = "inputs"  # how a summary names one input's values ("features", "token ids")


KINDS: dict[str, DataKind] = {
    "image": DataKind("image", pixels=True, noun="pixels"),
    "table": DataKind("table", features=True, noun="features"),
    "text": DataKind("text", token_ids=True, noun="token ids"),
    "series": DataKind("series", steps=True, noun="steps x features"),
    "audio": DataKind("audio", waveform=True, noun="samples"),
}


def kind_of(spec: Any) -> DataKind:
    """The DataKind of a DataSpec (or of a kind name)."""
    from torchkeel.errors import RunError

    name = spec if isinstance(spec, str) else spec.kind
    if name not in KINDS:
        raise RunError(f"unknown kind of data '{name}' (kinds: {', '.join(KINDS)}): retrain the run with this version")
    return KINDS[name]
