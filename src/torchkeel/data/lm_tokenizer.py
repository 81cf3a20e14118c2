"""Tokenisers of a language-model corpus: characters, or a byte-level BPE.

``tokenizer_from_spec(spec)`` rebuilds the one a run trained with from ``spec.extra["tokenizer"]``
(a JSON dict saved in model.json), so generation, eval and serving need nothing else.

- ``char``: the vocabulary is the distinct characters of the training part, sorted, one id
  each (nanoGPT's shakespeare_char prepare.py). ``unknown_policy = "drop"``: ``encode`` leaves
  out characters outside the vocabulary; ``unknown(text)`` lists them so a caller can say which
  (the held-out part's count is recorded in the corpus's metadata).
- ``bpe``: byte-level BPE trained offline with Hugging Face ``tokenizers`` (GPT-2's scheme:
  every byte is in the alphabet, so every string encodes and nothing is unknown).
- ``pretrained_lm``: a pretrained model's own (data/pretrained_lm_tokenizer.py), stored by its
  source and loaded from it again.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import numpy as np

from torchkeel.errors import DataError


class CharTokenizer:
    unknown_policy = "drop"  # encode() leaves out characters the vocabulary lacks

    def __init__(self, chars: str):
        self.chars = chars
        self.index = {c: i for i, c in enumerate(chars)}
        # code point -> id (-1: not in the vocabulary); one slot past the largest for the rest
        points = np.array([ord(c) for c in chars], dtype=np.int64)
        self._table = np.full(int(points.max(initial=-1)) + 2, -1, dtype=np.int64)
        self._table[points] = np.arange(len(chars))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        index = self.index
        return [index[c] for c in text if c in index]

    def encode_array(self, text: str) -> np.ndarray:
        """``encode`` as an int64 array, vectorised over the text's code points (UTF-32): a
        gigabyte of text encodes in seconds rather than the minutes a per-character loop takes."""
        points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        ids = self._table[np.minimum(points, len(self._table) - 1)]
        return ids[ids >= 0]  # unknown characters dropped, as encode does

    def decode(self, ids: list[int]) -> str:
        chars = self.chars
        return "".join(chars[i] for i in ids)

    def unknown(self, text: str) -> list[str]:
        return sorted(set(text) - self.index.keys())

    def to_dict(self) -> dict[str, Any]:
        return {"type": "char", "chars": self.chars, "unknown": self.unknown_policy}


class ByteBPETokenizer:
    unknown_policy = "none"  # byte-level: every string encodes

    def __init__(self, serialized: str):
        from tokenizers import Tokenizer

        self.serialized = serialized
        self.tokenizer = Tokenizer.from_str(serialized)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids

    def encode_array(self, text: str) -> np.ndarray:
        return np.asarray(self.encode(text), dtype=np.int64)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(list(ids))

    def unknown(self, text: str) -> list[str]:
        return []

    def to_dict(self) -> dict[str, Any]:
        return {"type": "bpe", "json": self.serialized}


class Tokenizer(Protocol):
    """What a corpus tokeniser has: CharTokenizer, ByteBPETokenizer, PretrainedLMTokenizer."""

    unknown_policy: str

    @property
    def vocab_size(self) -> int: ...
    def encode(self, text: str) -> list[int]: ...
    def encode_array(self, text: str) -> np.ndarray: ...
    def decode(self, ids: list[int]) -> str: ...
    def unknown(self, text: str) -> list[str]: ...
    def to_dict(self) -> dict[str, Any]: ...


def train_char(chars: Iterable[str]) -> CharTokenizer:
    """A character vocabulary from the distinct characters seen (any iterable of strings)."""
    seen: set[str] = set()
    for piece in chars:
        seen.update(piece)
    return CharTokenizer("".join(sorted(seen)))


def train_bpe(texts: Iterable[str], vocab_size: int) -> ByteBPETokenizer:
    """A byte-level BPE of at most ``vocab_size`` tokens (the 256 bytes included) learnt from
    ``texts``, offline and streamed: the trainer reads the pieces one by one."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < 257:
        raise DataError(f"data.corpus.vocab_size: {vocab_size} is too small for byte-level BPE (at least 257)")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return ByteBPETokenizer(tok.to_str())


def tokenizer_from_dict(stored: dict[str, Any]) -> Tokenizer:
    kind = stored.get("type")
    if kind == "char":
        return CharTokenizer(stored["chars"])
    if kind == "bpe":
        return ByteBPETokenizer(stored["json"])
    if kind == "pretrained_lm":  # a pretrained model's own, read again from its folder or hub name
        from torchkeel.data.pretrained_lm_tokenizer import PretrainedLMTokenizer

        return PretrainedLMTokenizer.load(str(stored["source"]))
    raise DataError(
        f"unknown language-model tokeniser '{kind}' (char, bpe, pretrained_lm): retrain the run with this version"
    )


def tokenizer_from_spec(spec: Any) -> Tokenizer:
    """The tokeniser of a language-model run's DataSpec (``spec.extra["tokenizer"]``)."""
    return tokenizer_from_dict(spec.extra["tokenizer"])


__all__ = ["ByteBPETokenizer", "CharTokenizer", "tokenizer_from_dict", "tokenizer_from_spec", "train_bpe", "train_char"]
