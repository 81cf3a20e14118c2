"""Training and evaluation windows of an encoded corpus (data/corpus.py).

Training: every batch is ``batch_size`` random windows of ``block_size + 1`` tokens read from
the memory-mapped token file (x = tokens[i:i+T], y = tokens[i+1:i+T+1]), so only the batch is
ever in memory. The window starts of batch b in epoch e come from a generator seeded with
(seed, e, b, rank) alone, so resuming at batch b gives exactly the batches an unbroken run
would have. An epoch is ``data.corpus.steps_per_epoch`` batches.

Evaluation: a fixed set of non-overlapping held-out windows, evenly spaced over the held-out
part and capped at ``data.corpus.eval_windows``, held as tensors: the val loss of two runs on
the same corpus and block size is measured on the same tokens.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from torchkeel.config_data import CorpusConfig, DataConfig
from torchkeel.data.bundle import DataBundle, DataSpec, Split
from torchkeel.data.corpus import EncodedCorpus, encoded_corpus
from torchkeel.errors import DataError


@dataclass
class CorpusSplit:
    """The training part: a memory-mapped token file; ``len`` is the number of window starts."""

    tokens: np.ndarray  # (N,) uint16/uint32, memory-mapped
    block_size: int
    steps_per_epoch: int
    device: torch.device = torch.device("cpu")
    dtype = torch.int64  # what a batch's x holds

    def __len__(self) -> int:
        return len(self.tokens) - self.block_size

    def to(self, device: torch.device | str) -> CorpusSplit:
        return replace(self, device=torch.device(device))

    def windows(self, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) inputs and (B, T) next tokens of the windows starting at ``starts``."""
        idx = starts.numpy()[:, None] + np.arange(self.block_size + 1)  # (B, T + 1)
        w = torch.from_numpy(self.tokens[idx].astype(np.int64)).to(self.device, non_blocking=True)
        return w[:, :-1].contiguous(), w[:, 1:].contiguous()


class WindowLoader:
    """TensorLoader's interface (``epoch(e, start)``, ``len``, ``batch_size``) over a CorpusSplit.
    ``shuffle`` and ``drop_last`` are accepted for that interface: windows are always random."""

    def __init__(
        self,
        split: CorpusSplit,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.split, self.batch_size, self.seed, self.rank = split, batch_size, seed, rank

    def __len__(self) -> int:
        return self.split.steps_per_epoch

    def starts(self, epoch: int, batch: int) -> torch.Tensor:
        """(B,) window starts of one batch: a pure function of (seed, epoch, batch, rank)."""
        g = torch.Generator().manual_seed(hash((self.seed, epoch, batch, self.rank)) & (2**62 - 1))
        return torch.randint(0, len(self.split), (self.batch_size,), generator=g)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for b in range(start, len(self)):
            yield self.split.windows(self.starts(epoch, b))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.epoch(0)


def eval_windows(tokens: np.ndarray, block_size: int, cap: int) -> Split:
    """Non-overlapping windows of the held-out tokens, at most ``cap``, evenly spaced."""
    count = (len(tokens) - 1) // block_size
    picks = np.unique(np.linspace(0, count - 1, min(count, cap)).round().astype(np.int64))
    w = torch.from_numpy(tokens[picks[:, None] * block_size + np.arange(block_size + 1)].astype(np.int64))
    return Split(w[:, :-1].contiguous(), w[:, 1:].contiguous())


def load_text_file(cfg: DataConfig, seed: int, tokenizer: dict[str, Any] | None = None) -> DataBundle:
    """The data set ``text_file``: train windows from the memory-mapped training part; the
    held-out part's fixed windows are both val and test. ``tokenizer``: a trained run's."""
    corpus = cfg.corpus or CorpusConfig()
    _check_context(corpus)  # before a corpus is encoded, which may take minutes
    encoded = encoded_corpus(cfg, corpus, tokenizer)
    train, val = encoded.tokens("train"), encoded.tokens("val")
    _check_fits(corpus.block_size, len(train), len(val), cfg.val_fraction)
    held_out = eval_windows(val, corpus.block_size, corpus.eval_windows)
    spec = DataSpec(
        name=cfg.name,
        kind="text",
        task="language_model",
        input_shape=(corpus.block_size,),
        extra=_extra(encoded, corpus, len(held_out)),
    )
    split = CorpusSplit(train, corpus.block_size, corpus.steps_per_epoch)
    return DataBundle(spec, split, held_out, held_out)


def _extra(encoded: EncodedCorpus, corpus: CorpusConfig, windows: int) -> dict[str, Any]:
    meta = encoded.meta
    return {
        "vocab_size": encoded.tokenizer.vocab_size,
        "block_size": corpus.block_size,
        "tokenizer": meta["tokenizer"],
        "chars_per_token": meta["val_chars"] / max(meta["val_tokens"], 1),
        "corpus": {
            "files": len(meta["files"]),
            "train_tokens": meta["train_tokens"],
            "val_tokens": meta["val_tokens"],
            "held_out": f"the last {meta['val_fraction']:.0%} of each file, both the val and the test split",
            "eval_windows": windows,
            "val_unknown_chars": meta["val_unknown_chars"],
            "cache": str(encoded.folder),
        },
    }


def _check_fits(block_size: int, train: int, val: int, val_fraction: float) -> None:
    for part, n in (("training part", train), ("held-out part", val)):
        if n < block_size + 1:
            raise DataError(
                f"data.corpus.block_size: {block_size} tokens (+1 for the targets) is longer than the corpus's "
                f"{part} ({n:,} tokens; the held-out part is the last {val_fraction:.0%} of each file): "
                "lower data.corpus.block_size or give more text"
            )


def _check_context(corpus: CorpusConfig) -> None:
    """A pretrained model's windows fit its position table (GPT-2: 1,024 tokens)."""
    if corpus.tokenizer != "pretrained":
        return
    from torchkeel.errors import ConfigError
    from torchkeel.hf_models import context_length

    try:
        positions = context_length(str(corpus.source), "data.corpus.source")
    except ConfigError:  # a tokeniser alone (no model config): loading it says what is wrong, if anything
        return
    if positions is not None and corpus.block_size > positions:
        raise DataError(
            f"data.corpus.block_size: {corpus.block_size} tokens exceed the {positions} positions of "
            f"'{corpus.source}' (its longest context): set data.corpus.block_size to at most {positions}"
        )
