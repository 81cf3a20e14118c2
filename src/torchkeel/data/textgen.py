"""``word_order``: a generated text task whose label depends only on the order of two words.

Each text holds the word ``red`` once, ``blue`` once and random filler words; the label says
which of the two comes first. Word counts carry no information about the label, so any
bag-of-words model stays at chance (50%) while a model that reads order (recurrent,
attention) can reach 100%: the test of whether a text model uses word order. Token ids
follow the text contract: (N, L) int64, right-padded with 0, ``<unk>`` is 1.
"""

from __future__ import annotations

import numpy as np
import torch

from torchkeel.config_data import DataConfig
from torchkeel.data.bundle import DataBundle, DataSpec, Split
from torchkeel.data.splits import split_indices

PAD, UNK, RED, BLUE = 0, 1, 2, 3
CLASSES = ["red first", "blue first"]


def word_order_tokens(
    n: int, length: int = 32, vocab_size: int = 64, min_length: int = 8, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` texts of ``min_length``..``length`` tokens: x (n, length) int64, y (n,) int64."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(min_length, length + 1, n)
    x = rng.integers(BLUE + 1, vocab_size, (n, length))  # fillers
    x[np.arange(length)[None, :] >= lengths[:, None]] = PAD
    # two distinct positions among each text's real tokens
    first = (rng.random(n) * lengths).astype(np.int64)
    second = (first + 1 + (rng.random(n) * (lengths - 1)).astype(np.int64)) % lengths
    x[np.arange(n), first] = RED
    x[np.arange(n), second] = BLUE
    y = (second < first).astype(np.int64)  # 1: blue comes first
    return torch.from_numpy(x), torch.from_numpy(y)


def vocabulary(vocab_size: int) -> list[str]:
    return ["<pad>", "<unk>", "red", "blue", *(f"w{i}" for i in range(BLUE + 1, vocab_size))]


def text_spec(name: str, length: int, vocab_size: int) -> DataSpec:
    return DataSpec(
        name=name,
        kind="text",
        task="classification",
        input_shape=(length,),
        classes=list(CLASSES),
        extra={"vocab_size": vocab_size, "pad_index": PAD, "vocab": vocabulary(vocab_size)},
    )


def load_word_order(cfg: DataConfig, seed: int) -> DataBundle:
    """4,000 generated texts of 8-32 words from a 64-word vocabulary; the split follows the seed."""
    x, y = word_order_tokens(4000)
    parts = split_indices(y.numpy(), len(x), (cfg.val_fraction, cfg.test_fraction), seed)
    val, test, train = (Split(x[i], y[i]) for i in parts)
    return DataBundle(text_spec("word_order", x.shape[1], 64), train, val if len(val) else None, test)
