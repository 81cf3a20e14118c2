"""Recurrent networks: text classifiers and series forecasters (``rnn``, ``lstm``, ``gru``).

Text (token ids (B, L), right-padded with 0) goes through an embedding and is packed with
each row's true length, so padding never enters the recurrence and a bidirectional layer's
backward direction starts at the last real token. Series (floats (B, window, features)) go
straight into the recurrent layers; the head then predicts the next ``horizon`` values.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from torchkeel.data.bundle import DataSpec
from torchkeel.data.kinds import kind_of
from torchkeel.errors import ConfigError
from torchkeel.models.layers import Probability, Width

Pooling = Literal["last", "mean", "max"]
Init = Literal["orthogonal", "torch"]
CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


def rnn(
    spec: DataSpec,
    *,
    embed_dim: Width = 64,
    hidden: Width = 128,
    layers: Width = 1,
    bidirectional: bool = False,
    dropout: Probability = 0.0,
    pooling: Pooling = "last",
    init: Init = "orthogonal",
) -> nn.Module:
    """Elman RNN (tanh) over token embeddings or series windows: classifier or forecaster."""
    return RecurrentNet("rnn", spec, embed_dim, hidden, layers, bidirectional, dropout, pooling, init)


def lstm(
    spec: DataSpec,
    *,
    embed_dim: Width = 64,
    hidden: Width = 128,
    layers: Width = 1,
    bidirectional: bool = False,
    dropout: Probability = 0.0,
    pooling: Pooling = "last",
    init: Init = "orthogonal",
) -> nn.Module:
    """LSTM over token embeddings or series windows: classifier or forecaster."""
    return RecurrentNet("lstm", spec, embed_dim, hidden, layers, bidirectional, dropout, pooling, init)


def gru(
    spec: DataSpec,
    *,
    embed_dim: Width = 64,
    hidden: Width = 128,
    layers: Width = 1,
    bidirectional: bool = False,
    dropout: Probability = 0.0,
    pooling: Pooling = "last",
    init: Init = "orthogonal",
) -> nn.Module:
    """GRU over token embeddings or series windows: classifier or forecaster."""
    return RecurrentNet("gru", spec, embed_dim, hidden, layers, bidirectional, dropout, pooling, init)


class RecurrentNet(nn.Module):
    """[embedding] -> recurrent layers -> pooling over time -> dropout -> linear head.

    ``init``: ``orthogonal`` (see :func:`init_recurrent`) or ``torch``'s own initialisation.

    ``pooling``: ``last`` is the final hidden state of the top layer (both directions
    concatenated), ``mean`` and ``max`` pool the top layer's outputs over the real time steps.
    """

    def __init__(
        self,
        cell: str,
        spec: DataSpec,
        embed_dim: int,
        hidden: int,
        layers: int,
        bidirectional: bool,
        dropout: float,
        pooling: str,
        init: str,
    ):
        super().__init__()
        self.text = kind_of(spec).token_ids  # token ids go through an embedding; series steps are floats
        if self.text:
            vocab = text_vocab_size(spec, cell)
            self.embed: nn.Module | None = nn.Embedding(vocab, embed_dim, padding_idx=0)
            inputs = embed_dim
        else:
            self.embed = None
            inputs = spec.input_shape[-1]  # features per time step
        # torch applies dropout between stacked layers only, so a 1-layer net gets none there
        self.rnn = CELLS[cell](
            inputs,
            hidden,
            num_layers=layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if layers > 1 else 0.0,
        )
        if init == "orthogonal":
            init_recurrent(self.rnn, cell)
        self.directions = 2 if bidirectional else 1
        self.pooling = pooling
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden * self.directions, spec.output_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.embed is None:
            out, state = self.rnn(x)  # (B, T, D*H)
            return self.head(self._pool(out, state, None))
        # true lengths from the padding (pad index 0); an empty text still gets one (pad) step.
        # pack_padded_sequence needs the lengths on the CPU: one host sync per batch.
        lengths = (x != 0).sum(1).clamp_min(1)
        packed = pack_padded_sequence(self.embed(x), lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, state = self.rnn(packed)
        if self.pooling != "last":
            out, _ = pad_packed_sequence(out, batch_first=True)  # (B, max length, D*H)
        return self.head(self._pool(out, state, lengths))

    def _pool(self, out: torch.Tensor, state: torch.Tensor | tuple, lengths: torch.Tensor | None) -> torch.Tensor:
        if self.pooling == "last":
            h_n = state[0] if isinstance(state, tuple) else state  # LSTM: (h_n, c_n); (layers*D, B, H)
            top = h_n[-self.directions :]  # (D, B, H), the top layer's directions
            return top.transpose(0, 1).reshape(top.shape[1], -1)  # (B, D*H)
        if lengths is None:  # series: every step is real
            return out.mean(1) if self.pooling == "mean" else out.amax(1)
        steps = torch.arange(out.shape[1], device=out.device)
        real = (steps[None, :] < lengths.to(out.device)[:, None]).unsqueeze(-1)  # (B, T, 1)
        if self.pooling == "mean":
            return (out * real).sum(1) / lengths.to(out.device)[:, None]
        return out.masked_fill(~real, float("-inf")).amax(1)


def init_recurrent(layers: nn.RNNBase, cell: str) -> None:
    """Keras's recurrent initialisation instead of torch's U(-1/sqrt(H), 1/sqrt(H)) for every
    weight and bias: Glorot-uniform input weights, an orthogonal recurrent matrix per gate
    (Saxe et al. 2014), zero biases and, in LSTMs, a forget-gate bias of 1 so the cell keeps its
    state from the first step (Jozefowicz et al. 2015). On workload (3) of benchmarks/speed.py
    (4 topics, 2 epochs, seeds 0-2) it took the LSTM from 0.46-0.52 test accuracy to 0.58-0.61
    and the GRU from 0.50-0.56 to 0.55-0.59 (benchmarks/RESULTS.md)."""
    hidden = layers.hidden_size
    with torch.no_grad():
        for name, p in layers.named_parameters():
            if name.startswith("weight_ih"):  # (gates * H, inputs)
                nn.init.xavier_uniform_(p)
            elif name.startswith("weight_hh"):  # (gates * H, H): one square block per gate
                for gate in p.split(hidden):
                    nn.init.orthogonal_(gate)
            else:
                p.zero_()
                if cell == "lstm" and name.startswith("bias_ih"):
                    p[hidden : 2 * hidden] = 1.0  # torch's gate order: input, forget, cell, output


def text_vocab_size(spec: DataSpec, model: str) -> int:
    vocab = spec.extra.get("vocab_size")
    if not isinstance(vocab, int) or vocab < 2:
        raise ConfigError(
            f"model '{model}' needs the vocabulary size of text data '{spec.name}' (spec.extra['vocab_size'])"
        )
    return vocab
