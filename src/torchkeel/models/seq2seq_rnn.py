"""``gru_seq2seq``: an encoder-decoder GRU with additive attention for translation (Bahdanau et al. 2015).

The encoder is one bidirectional GRU over the source embeddings, packed with each row's true
length so padding never enters the recurrence and the backward direction starts at the last
real token; its outputs (B, S, 2 * width) are the memory. The decoder follows the paper's
RNNsearch: at step i the previous top-layer state s_{i-1} scores every source position through
``v . tanh(W s_{i-1} + U h_j)`` (``U h_j`` computed once per sentence, in ``start``), the context
c_i (the weighted sum of the memory) is fed with the embedding of y_{i-1} into the GRU, and a
deep-output layer maps (s_i, c_i, y_{i-1}) to the embedding width, tanh where the paper has
maxout, so the output projection is the target embedding itself (tied; Press & Wolf 2017). The
first state is tanh of a projection of the backward direction's state at the first source token
(the paper's s_0). Recurrent weights start as rnn.py's ``init_recurrent`` makes them.

It has the decoding interface of models/seq2seq.py, so generation/seq2seq.py's greedy and beam
search, evaluation, predict and serve treat it as they treat ``transformer_seq2seq``. A GRU's
"cache" is its hidden state: with it each step runs one GRU step from the stored state; without
it every step reruns the whole prefix from s_0 (the same arithmetic, so the same logits).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from torchkeel.data.bundle import DataSpec
from torchkeel.errors import ConfigError
from torchkeel.generation.seq2seq import Decoding, translate
from torchkeel.models.layers import Probability, Width
from torchkeel.models.rnn import init_recurrent
from torchkeel.models.seq2seq import PAD, Memory, Prefix, pair_sizes


def gru_seq2seq(
    spec: DataSpec,
    *,
    width: Width = 256,
    layers: Width = 1,
    # fairseq's LSTM translation default (dropout 0.1 on embeddings and outputs), and
    # transformer_seq2seq's, so the two families compare at the same regularisation
    dropout: Probability = 0.1,
    share_embeddings: bool | None = None,
    beam: Width = 5,
    length_penalty: float = 1.0,
) -> nn.Module:
    """Encoder-decoder GRU with additive (Bahdanau) attention for translation: tied embeddings, beam search.

    Defaults: embeddings and GRU states 256 wide (the bidirectional encoder's memory is 512),
    one decoder layer (``layers`` stacks more). ``share_embeddings`` defaults to whether the
    vocabulary is joint; ``beam`` and ``length_penalty`` are as in ``transformer_seq2seq``.
    """
    source_vocab, target_vocab, joint = pair_sizes(spec, "gru_seq2seq")
    share = joint if share_embeddings is None else share_embeddings
    if share and source_vocab != target_vocab:
        raise ConfigError("model.share_embeddings needs one joint vocabulary (data.pairs.joint: true)")
    decoding = Decoding(beam=beam, length_penalty=length_penalty)
    return GRUSeq2Seq(source_vocab, target_vocab, width, layers, dropout, share, decoding)


class GRUState(Prefix):
    """A GRU decoder's state: the attention's keys (B, S, A) computed once from the memory, the
    first hidden state (layers, B, H) and, with the cache, the hidden state after the first
    ``consumed`` tokens."""

    def __init__(self, memory: Memory, keys: torch.Tensor, first: torch.Tensor, cache: bool, bos: int):
        super().__init__(memory, cache, bos)
        self.keys, self.first = keys, first
        self.hidden, self.consumed = first, 0

    def reorder(self, index: torch.Tensor, same_source: bool = False) -> None:
        """Keep the rows ``index`` (``same_source``: among copies of one sentence, as
        DecoderState.reorder: the memory and its keys stay)."""
        if not same_source:
            self.memory = Memory(self.memory.states[index], self.memory.mask[index])
            self.keys = self.keys[index]
        self.tokens = self.tokens[index]
        self.first, self.hidden = self.first[:, index], self.hidden[:, index]


class AdditiveAttention(nn.Module):
    """e_j = v . tanh(W q + U h_j), softmax over the real source positions (Bahdanau et al. 2015, A.1.2)."""

    def __init__(self, query: int, memory: int, width: int):
        super().__init__()
        self.query, self.key = nn.Linear(query, width, bias=False), nn.Linear(memory, width)
        self.score = nn.Linear(width, 1, bias=False)

    def forward(self, q: torch.Tensor, keys: torch.Tensor, memory: Memory) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.score(torch.tanh(keys + self.query(q)[:, None])).squeeze(-1)  # (B, S)
        weights = e.masked_fill(~memory.mask, float("-inf")).softmax(-1)
        return torch.bmm(weights[:, None], memory.states)[:, 0], weights  # (B, 2H) context, (B, S)


class GRUSeq2Seq(nn.Module):
    def __init__(self, source_vocab, target_vocab, width, layers, dropout, share, decoding):
        super().__init__()
        self.width, self.dropout, self.decoding = width, dropout, decoding
        self.target_embed = nn.Embedding(target_vocab, width, padding_idx=PAD)
        self.source_embed = self.target_embed if share else nn.Embedding(source_vocab, width, padding_idx=PAD)
        self.encoder = nn.GRU(width, width, batch_first=True, bidirectional=True)
        self.attention = AdditiveAttention(width, 2 * width, width)
        self.bridge = nn.Linear(width, layers * width)  # s_0 from the backward state at the first token
        # torch applies dropout between stacked layers only, so one layer gets none there
        self.decoder = nn.GRU(3 * width, width, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.deep_output = nn.Linear(4 * width, width)  # (s_i, c_i, E y_{i-1}) -> embedding width
        init_recurrent(self.encoder, "gru")
        init_recurrent(self.decoder, "gru")
        for embed in {id(e): e for e in (self.source_embed, self.target_embed)}.values():
            nn.init.normal_(embed.weight, std=width**-0.5)  # as transformer_seq2seq: unit rows once scaled
            nn.init.zeros_(embed.weight[PAD])
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def _embed(self, embed: nn.Embedding, ids: torch.Tensor) -> torch.Tensor:
        return F.dropout(embed(ids) * math.sqrt(self.width), self.dropout, self.training)  # (B, T, H)

    def encode(self, src: torch.Tensor) -> Memory:
        src = src[:, : max(1, int((src != PAD).sum(1).max()))]  # the batch's longest source, not the split's
        # an empty source still gets one (padding) step, so its attention has a position to take;
        # pack_padded_sequence needs the lengths on the CPU: one host sync per batch
        lengths = (src != PAD).sum(1).clamp_min(1)
        packed = pack_padded_sequence(self._embed(self.source_embed, src), lengths.cpu(), True, enforce_sorted=False)
        states, _ = pad_packed_sequence(self.encoder(packed)[0], batch_first=True, total_length=src.shape[1])
        mask = torch.arange(src.shape[1], device=src.device) < lengths[:, None]  # (B, S)
        return Memory(F.dropout(states, self.dropout, self.training), mask)  # states (B, S, 2H)

    def start(self, memory: Memory, cache: bool = True, bos: int = 2) -> GRUState:
        b = memory.states.shape[0]
        backward = memory.states[:, 0, self.width :]  # (B, H): the backward GRU has read the whole source
        first = torch.tanh(self.bridge(backward)).view(b, -1, self.width).transpose(0, 1).contiguous()
        return GRUState(memory, self.attention.key(memory.states), first, cache, bos)  # first (layers, B, H)

    def _decode(self, tokens: torch.Tensor, hidden: torch.Tensor, state: GRUState):
        """Run ``tokens`` (B, T) from ``hidden`` (layers, B, H): (B, T, V) logits of each next
        token, the hidden state after the last one and the attention weights (B, T, S)."""
        embedded, outputs, attended = self._embed(self.target_embed, tokens), [], []
        for t in range(tokens.shape[1]):  # the query is the previous state: one step at a time
            context, weights = self.attention(hidden[-1], state.keys, state.memory)  # (B, 2H), (B, S)
            step = torch.cat([embedded[:, t], context], -1)[:, None]  # (B, 1, 3H)
            out, hidden = self.decoder(step, hidden)  # (B, 1, H)
            outputs.append(torch.cat([out[:, 0], context, embedded[:, t]], -1))
            attended.append(weights)
        deep = torch.tanh(self.deep_output(torch.stack(outputs, 1)))  # (B, T, H)
        logits = F.linear(F.dropout(deep, self.dropout, self.training), self.target_embed.weight)
        return logits, hidden, torch.stack(attended, 1)  # (B, T, V) tied projection

    def next_logits(self, state: GRUState) -> torch.Tensor:
        """(B, V) logits of the token after ``state.tokens``; with the cache only the tokens
        since the last call go through the GRU, from the stored hidden state."""
        if not state.cache:
            return self._decode(state.tokens, state.first, state)[0][:, -1]
        logits, state.hidden, _ = self._decode(state.tokens[:, state.consumed :], state.hidden, state)
        state.consumed = state.length
        return logits[:, -1]

    @torch.inference_mode()
    def cross_attention(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """(B, T, S) the attention over the source at each target position (teacher-forced on
        ``tgt_in``): the report's attention maps."""
        state = self.start(self.encode(src), cache=False)
        return self._decode(tgt_in, state.first, state)[2]

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor | None = None) -> torch.Tensor:
        memory = self.encode(src)
        if tgt_in is None:
            return translate(self, memory, self.decoding)
        state = self.start(memory, cache=False)
        return self._decode(tgt_in, state.first, state)[0]  # (B, T, V)
