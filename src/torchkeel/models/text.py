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
from torchkeel.data.tokenize import used_width
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
        tokens = trim_padding(tokens, self.pad_index)
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


def linear_bow(spec: DataSpec) -> nn.Module:
    """Logistic regression on tf-idf: a text's word (and n-gram) ids into one linear layer.

    The ids are the words and, with ``data.text.ngrams: 2``, hashed word bigrams; the loop
    trains it like any model (regularise it with ``train.optimizer.weight_decay``). The
    weighting is scikit-learn's ``TfidfVectorizer(sublinear_tf=True)``: 1 + log(count) per
    id and text, times the smoothed inverse document frequency log((1 + n) / (1 + df)) + 1 of
    the training texts, each text's vector scaled to unit length (tests/test_linear_bow.py
    checks it against scikit-learn, feature for feature).
    """
    if not kind_of(spec).token_ids or "vocab_size" not in spec.extra:
        raise ConfigError(f"model 'linear_bow' takes text (token ids); data '{spec.name}' gives {spec.kind} samples")
    return TfidfLinear(spec.extra["vocab_size"], spec.output_size, spec.extra.get("pad_index", 0))


class TfidfLinear(nn.Module):
    """A linear layer over sparse tf-idf features, as an EmbeddingBag(sum) whose per-id weights
    are the tf-idf values: the (vocab, outputs) table is the linear layer's weight matrix,
    read only at the ids a text holds. The idf comes from the training texts (``fit_data``,
    called once before training, as for every data-fitted layer)."""

    fit_needs = "the training texts' token ids in memory"

    def __init__(self, vocab_size: int, outputs: int, pad_index: int):
        super().__init__()
        self.pad_index = pad_index
        self.linear = nn.EmbeddingBag(vocab_size, outputs, mode="sum", padding_idx=pad_index)
        nn.init.zeros_(self.linear.weight)  # logistic regression's start: every class equally likely
        self.bias = nn.Parameter(torch.zeros(outputs))
        self.register_buffer("idf", torch.ones(vocab_size))
        self.register_buffer("fitted", torch.tensor(False))

    @torch.no_grad()
    def fit_data(self, tokens: torch.Tensor, chunk: int = 1024) -> None:
        """The smoothed idf from the training texts' ids (N, L)."""
        vocab = self.idf.numel()
        df = torch.zeros(vocab, dtype=torch.float64)
        for part in tokens.split(chunk):
            keys = torch.unique(_row_keys(part, vocab))  # each id once per text
            df += torch.bincount(keys % vocab, minlength=vocab).double()
        n = len(tokens)
        self.idf.copy_((torch.log((1 + n) / (1 + df)) + 1).to(self.idf))
        self.fitted.fill_(True)

    def weights(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L) weight of each id occurrence: an id's occurrences in a text sum to its tf-idf
        value there, and pad ids weigh 0."""
        b, vocab = tokens.shape[0], self.idf.numel()
        keys, position, counts = torch.unique(_row_keys(tokens, vocab), return_inverse=True, return_counts=True)
        ids, rows = keys % vocab, keys // vocab
        value = (1 + counts.to(self.idf.dtype).log()) * self.idf[ids]
        value = value.masked_fill(ids == self.pad_index, 0.0)
        norm = torch.zeros(b, dtype=value.dtype, device=value.device).index_add_(0, rows, value * value).sqrt()
        return (value / counts / norm.clamp_min(1e-12)[rows])[position]

    def features(self, tokens: torch.Tensor) -> torch.Tensor:
        """The dense (B, vocab) tf-idf matrix (for inspection and tests; training never makes it)."""
        out = torch.zeros(tokens.shape[0], self.idf.numel(), dtype=self.idf.dtype, device=tokens.device)
        return out.scatter_add_(1, tokens, self.weights(tokens))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = trim_padding(tokens, self.pad_index)  # the weighting sorts every id: pads cost too
        return self.linear(tokens, per_sample_weights=self.weights(tokens)) + self.bias  # (B, outputs)


def trim_padding(tokens: torch.Tensor, pad_index: int) -> torch.Tensor:
    """(B, L) right-padded rows cut to the batch's longest row: the rows are padded to the
    longest text of the whole data (up to data.text.max_length), most batches need far less.
    Not while the model is traced or exported, where the width must stay the input's."""
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return tokens
    return tokens[:, : max(1, used_width(tokens, pad_index))]


def _row_keys(tokens: torch.Tensor, vocab: int) -> torch.Tensor:
    """(B, L) ids made unique per row: row * vocab + id."""
    rows = torch.arange(tokens.shape[0], device=tokens.device)[:, None]
    return rows * vocab + tokens
