"""Tokenisers learnt from the train split, saved as plain JSON (in the DataSpec) so that
predict and serve turn text into the same ids as training did.

- ``word``: lower-case, split on a regex into words and punctuation marks, a vocabulary of
  the ``vocab_size - 2`` most frequent tokens seen at least ``min_freq`` times.
- ``bpe`` / ``wordpiece``: subword vocabularies trained offline with Hugging Face
  ``tokenizers`` (Unicode NFD, accents stripped and lower-cased when ``lowercase``, split on
  whitespace and punctuation first).

Every tokeniser has ``<pad>`` = 0 and ``<unk>`` = 1 (the data contract for text).
"""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from collections.abc import Iterable
from typing import Any, Protocol

import numpy as np
import torch

from torchkeel.config import TextConfig
from torchkeel.errors import DataError

PAD, UNK = "<pad>", "<unk>"
PAD_INDEX, UNK_INDEX = 0, 1
WORD_PATTERN = r"\w+|[^\w\s]"  # runs of letters/digits, or one punctuation mark


class Tokenizer(Protocol):
    vocab_size: int

    def encode_batch(self, texts: list[str]) -> list[list[int]]: ...

    def tokens(self, text: str) -> list[str]: ...

    def to_dict(self) -> dict[str, Any]: ...


class WordTokenizer:
    def __init__(self, vocab: list[str], lowercase: bool = True, pattern: str = WORD_PATTERN):
        self.vocab, self.lowercase, self.pattern = vocab, lowercase, pattern
        self.index = {token: i for i, token in enumerate(vocab)}
        self.regex = re.compile(pattern)

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, min_freq: int = 1, lowercase: bool = True) -> WordTokenizer:
        counts: Counter[str] = Counter()
        blank = cls([PAD, UNK], lowercase)
        for text in texts:
            counts.update(blank.tokens(text))
        kept = [t for t, c in counts.items() if c >= min_freq and t not in (PAD, UNK)]
        kept.sort(key=lambda t: (-counts[t], t))  # most frequent first; ties by the token, for a fixed order
        return cls([PAD, UNK, *kept[: vocab_size - 2]], lowercase)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def tokens(self, text: str) -> list[str]:
        return self.regex.findall(text.lower() if self.lowercase else text)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        get = self.index.get
        return [[get(t, UNK_INDEX) for t in self.tokens(text)] for text in texts]

    def to_dict(self) -> dict[str, Any]:
        return {"type": "word", "lowercase": self.lowercase, "pattern": self.pattern, "vocab": self.vocab}


class SubwordTokenizer:
    """A Hugging Face ``tokenizers`` BPE or WordPiece model."""

    def __init__(self, kind: str, tokenizer: Any):
        self.kind, self.tokenizer = kind, tokenizer

    @classmethod
    def train(cls, texts: list[str], kind: str, vocab_size: int, min_freq: int = 1, lowercase: bool = True):
        hf = hf_tokenizers()
        options = {"vocab_size": vocab_size, "min_frequency": min_freq, "special_tokens": [PAD, UNK]}
        if kind == "bpe":
            tok, trainer = hf.Tokenizer(hf.models.BPE(unk_token=UNK)), hf.trainers.BpeTrainer(**options)
        else:
            tok, trainer = hf.Tokenizer(hf.models.WordPiece(unk_token=UNK)), hf.trainers.WordPieceTrainer(**options)
        trainer.show_progress = False
        steps = [hf.normalizers.NFD(), hf.normalizers.StripAccents()] + (
            [hf.normalizers.Lowercase()] if lowercase else []
        )
        tok.normalizer = hf.normalizers.Sequence(steps)
        tok.pre_tokenizer = hf.pre_tokenizers.Whitespace()
        tok.train_from_iterator(texts, trainer, length=len(texts))
        return cls(kind, tok)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def tokens(self, text: str) -> list[str]:
        return self.tokenizer.encode(text).tokens

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(texts)]

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "tokenizer": json.loads(self.tokenizer.to_str())}


def train_tokenizer(texts: list[str], cfg: TextConfig) -> Tokenizer:
    if cfg.tokenizer == "word":
        return WordTokenizer.train(texts, cfg.vocab_size, cfg.min_freq, cfg.lowercase)
    return SubwordTokenizer.train(texts, cfg.tokenizer, cfg.vocab_size, cfg.min_freq, cfg.lowercase)


def tokenizer_from_dict(d: dict[str, Any]) -> Tokenizer:
    if d["type"] == "word":
        return WordTokenizer(d["vocab"], d["lowercase"], d["pattern"])
    return SubwordTokenizer(d["type"], hf_tokenizers().Tokenizer.from_str(json.dumps(d["tokenizer"])))


def hf_tokenizers() -> Any:
    """The Hugging Face ``tokenizers`` module, or a DataError saying how to install it."""
    try:
        import tokenizers
    except ImportError:
        raise DataError(
            "data.text.tokenizer: bpe and wordpiece need 'tokenizers': pip install 'torchkeel[text]'"
        ) from None
    return tokenizers


def encode_texts(tokenizer: Tokenizer, texts: list[str], length: int) -> tuple[torch.Tensor, int]:
    """(N, length) int64 ids, right-padded with 0 and truncated to ``length``; and how many
    texts were truncated."""
    ids = tokenizer.encode_batch(texts)
    full = np.array([len(seq) for seq in ids], dtype=np.int64)
    kept = np.minimum(full, length)
    out = np.zeros((len(ids), length), dtype=np.int64)
    # row-major fill: the mask selects each row's first kept[i] slots, in the order of `flat`
    flat = np.fromiter(itertools.chain.from_iterable(seq[:length] for seq in ids), dtype=np.int64, count=kept.sum())
    out[np.arange(length)[None, :] < kept[:, None]] = flat
    return torch.from_numpy(out), int((full > length).sum())
