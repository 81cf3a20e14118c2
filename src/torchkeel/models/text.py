"""A bag-of-embeddings text classifier: the mean of the token embeddings, then a linear layer.

The fastText-style baseline (Joulin et al. 2016, "Bag of Tricks for Efficient Text
Classification"): word order is ignored, which makes it fast and a fair first model for topic
or sentiment labels; with hashed word bigrams (``data.text.ngrams: 2``) it sees local word
order too, and is the default text recipe (``torchkeel.recipes``).
"""

from __future__ import annotations

import torch
from torch import nn

from torchkeel.data.bundle import DataSpec
from torchkeel.data.kinds import kind_of
from torchkeel.errors import ConfigError
from torchkeel.models.layers import Probability, Width


class EmbeddingBagClassifier(nn.Module):
    def __init__(
        self, vocab_size: int, dim: int, outputs: int, dropout: float, pad_index: int, token_dropout: float = 0.0
    ):
        super().__init__()
        self.pad_index, self.token_dropout = pad_index, token_dropout
        # padding_idx: pad tokens are left out of each bag's mean and get no gradient
        self.embed = nn.EmbeddingBag(vocab_size, dim, mode="mean", padding_idx=pad_index)
        # fastText's init, uniform(-1/dim, 1/dim) (Joulin et al. 2016, src/fasttext.cc): torch's
        # N(0, 1) rows let each rare word's random vector dominate the mean at the start, which
        # costs ~2 points of AG News accuracy (benchmarks/quality.py)
        with torch.no_grad():
            self.embed.weight.uniform_(-1.0 / dim, 1.0 / dim)
            self.embed.weight[pad_index].zero_()
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(dim, outputs)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.training and self.token_dropout > 0:
            # word dropout (Iyyer et al. 2015, "Deep Unordered Composition"): each training text
            # loses a random share of its ids, so no single word or n-gram can carry the label
            dropped = torch.rand(tokens.shape, device=tokens.device) < self.token_dropout  # (B, L)
            tokens = tokens.masked_fill(dropped, self.pad_index)
        bag = self.embed(tokens)  # (B, L) ids -> (B, dim), the mean over non-pad tokens
        return self.head(self.dropout(bag))  # (B, outputs)


def embedding_bag(
    spec: DataSpec, *, embed_dim: Width = 64, dropout: Probability = 0.0, token_dropout: Probability = 0.0
) -> nn.Module:
    """EmbeddingBag(mean) over token ids -> dropout -> linear, for ``text`` data.

    ``token_dropout``: the share of each training text's ids left out at random (word dropout).
    """
    if not kind_of(spec).token_ids or "vocab_size" not in spec.extra:
        raise ConfigError(f"model 'embedding_bag' takes text (token ids); data '{spec.name}' gives {spec.kind} samples")
    return EmbeddingBagClassifier(
        spec.extra["vocab_size"], embed_dim, spec.output_size, dropout, spec.extra.get("pad_index", 0), token_dropout
    )
