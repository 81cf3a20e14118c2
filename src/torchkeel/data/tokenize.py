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

from torchkeel.config_data import TextConfig
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
    """A Hugging Face ``tokenizers`` BPE or WordPiece model (or text_pairs' byte-level BPE or
    unigram model, trained in data/pairs.py)."""

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

    def decode(self, ids: list[int]) -> str:
        """The text of ``ids``, special tokens (padding, <s>, </s>) left out. A byte-level
        pre-tokeniser with ``add_prefix_space`` put a space before the text, which its decoder
        keeps: it is taken off again, so that ``decode(encode(s)) == s``."""
        text = self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)
        pre = self.tokenizer.pre_tokenizer
        if isinstance(pre, hf_tokenizers().pre_tokenizers.ByteLevel) and pre.add_prefix_space:
            text = text.removeprefix(" ")
        return text

    def to_dict(self) -> dict[str, Any]:
        d = {"type": self.kind, "tokenizer": json.loads(self.tokenizer.to_str())}
        if getattr(self.tokenizer, "encode_special_tokens", False):  # not in the tokenizer's own JSON
            d["encode_special_tokens"] = True
        return d


def train_tokenizer(texts: list[str], cfg: TextConfig) -> Tokenizer:
    if cfg.tokenizer == "pretrained":
        from torchkeel.data.pretrained_tokenizer import PretrainedTokenizer

        return with_ngrams(PretrainedTokenizer.load(pretrained_source(cfg), cfg.max_length), cfg)
    if cfg.tokenizer == "word":
        return with_ngrams(WordTokenizer.train(texts, cfg.vocab_size, cfg.min_freq, cfg.lowercase), cfg)
    base = SubwordTokenizer.train(texts, cfg.tokenizer, cfg.vocab_size, cfg.min_freq, cfg.lowercase)
    return with_ngrams(base, cfg)


def pretrained_source(cfg: TextConfig) -> str:
    if not cfg.encoder:
        raise DataError("data.text.tokenizer: pretrained needs data.text.encoder (a local folder or a hub name)")
    return cfg.encoder


def with_ngrams(base: Tokenizer, cfg: TextConfig) -> Tokenizer:
    return NgramTokenizer(base, cfg.ngrams, cfg.ngram_buckets) if cfg.ngrams > 1 else base


def tokenizer_from_dict(d: dict[str, Any]) -> Tokenizer:
    if d["type"] == "word":
        return WordTokenizer(d["vocab"], d["lowercase"], d["pattern"])
    if d["type"] == "ngram":
        return NgramTokenizer(tokenizer_from_dict(d["base"]), d["n"], d["buckets"])
    if d["type"] == "concat":
        return ConcatTokenizer([(tokenizer_from_dict(part["tokenizer"]), part["width"]) for part in d["parts"]])
    if d["type"] == "pretrained":
        from torchkeel.data.pretrained_tokenizer import PretrainedTokenizer

        return PretrainedTokenizer.load(d["source"], d["max_length"])
    tokenizer = hf_tokenizers().Tokenizer.from_str(json.dumps(d["tokenizer"]))
    if d.get("encode_special_tokens"):  # "</s>" in a text is text, not the token (data/pairs.py)
        tokenizer.encode_special_tokens = True
    return SubwordTokenizer(d["type"], tokenizer)


# fastText's id hash multiplier (Joulin et al. 2016, src/dictionary.cc addWordNgrams)
NGRAM_HASH = 116049371


class NgramTokenizer:
    """Token ids plus hashed n-gram ids, for bag-of-n-grams models (fastText, Joulin et al.
    2016): word order inside an n-gram is kept at the price of a fixed table of ``buckets``
    extra ids (n-grams that collide share one embedding).

    The n-grams of a token sequence follow its tokens interleaved: token i, then the n-grams
    ending at token i (bigram, trigram ...), so cutting the ids at any width keeps the tokens
    and n-grams of a prefix of the text (``data.text.max_length`` tokens are up to
    ``max_length * n`` ids). The hash is over token ids, not strings: the same on every machine
    and Python run.
    """

    def __init__(self, base: Tokenizer, n: int, buckets: int):
        self.base, self.n, self.buckets = base, n, buckets

    @property
    def vocab_size(self) -> int:
        return self.base.vocab_size + self.buckets

    def tokens(self, text: str) -> list[str]:
        return self.base.tokens(text)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [self._with_ngrams(seq) for seq in self.base.encode_batch(texts)]

    def _with_ngrams(self, seq: list[int]) -> list[int]:
        first, out = self.base.vocab_size, []
        for i, token in enumerate(seq):
            out.append(token)
            h = token
            for j in range(i - 1, max(-1, i - self.n), -1):  # the n-grams ending at token i, growing leftwards
                h = (h * NGRAM_HASH + seq[j]) % 2**64
                out.append(first + h % self.buckets)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "ngram",
            "n": self.n,
            "buckets": self.buckets,
            "base": self.base.to_dict(),
        }


class ConcatTokenizer:
    """Several tokenisers side by side (an ensemble of models that read text each their own
    way): a text's ids are each part's ids, cut or right-padded with 0 to that part's width,
    one after the other, so part k is always the same columns of the row."""

    def __init__(self, parts: list[tuple[Tokenizer, int]]):
        self.parts = parts

    @property
    def vocab_size(self) -> int:
        return max(tokenizer.vocab_size for tokenizer, _ in self.parts)

    @property
    def width(self) -> int:
        return sum(width for _, width in self.parts)

    def tokens(self, text: str) -> list[str]:
        return self.parts[0][0].tokens(text)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        rows: list[list[int]] = [[] for _ in texts]
        for tokenizer, width in self.parts:
            for row, seq in zip(rows, tokenizer.encode_batch(texts), strict=True):
                row += seq[:width] + [PAD_INDEX] * (width - len(seq))
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {"type": "concat", "parts": [{"tokenizer": t.to_dict(), "width": w} for t, w in self.parts]}


def hf_tokenizers() -> Any:
    """The Hugging Face ``tokenizers`` module, or a DataError saying how to install it."""
    try:
        import tokenizers
    except ImportError:
        raise DataError(
            "data.text.tokenizer: bpe and wordpiece need 'tokenizers': pip install 'torchkeel[text]'"
        ) from None
    return tokenizers


def used_width(ids: torch.Tensor, pad_index: int = PAD_INDEX) -> int:
    """1 + the last column of ``ids`` (N, L) where some row holds an id that is not padding (0:
    none does); right-padded rows, and an ensemble's rows with padding between parts, alike."""
    used = (ids != pad_index).any(0).nonzero()
    return int(used.max()) + 1 if len(used) else 0


def encode_texts(tokenizer: Tokenizer, texts: list[str], length: int, pad: bool = True) -> tuple[torch.Tensor, int]:
    """(N, length) int64 ids, right-padded with 0 and truncated to ``length``; and how many
    texts were truncated. ``pad=False``: only as wide as the longest text (at most ``length``),
    so a large ``data.text.max_length`` costs no memory beyond the data's own."""
    return pad_ids(tokenizer.encode_batch(texts), length, pad)


def pad_ids(ids: list[list[int]], length: int, pad: bool = True) -> tuple[torch.Tensor, int]:
    """``encode_texts`` of sequences already encoded."""
    full = np.array([len(seq) for seq in ids], dtype=np.int64)
    kept = np.minimum(full, length)
    width = length if pad else max(1, int(kept.max(initial=0)))
    out = np.zeros((len(ids), width), dtype=np.int64)
    # row-major fill: the mask selects each row's first kept[i] slots, in the order of `flat`
    flat = np.fromiter(itertools.chain.from_iterable(seq[:length] for seq in ids), dtype=np.int64, count=kept.sum())
    out[np.arange(width)[None, :] < kept[:, None]] = flat
    return torch.from_numpy(out), int((full > length).sum())
