"""``transformer_seq2seq``: an encoder-decoder Transformer for translation (Vaswani et al. 2017).

Pre-norm blocks (LayerNorm before each sub-layer, then a final LayerNorm per stack: Xiong et
al. 2020 — it trains without the careful warm-up post-norm needs), attention on
``F.scaled_dot_product_attention`` with the source's padding masked and the decoder's
self-attention causal, sinusoidal positions (any length), and one embedding matrix shared by the
source, the target and the output projection when the vocabulary is joint (Press & Wolf 2017).
Embeddings are drawn from N(0, 1/width) and scaled by sqrt(width), as fairseq does, so their
rows have unit variance going in and the tied projection's logits start near unit scale.

The interface every seq2seq model has (generation/seq2seq.py decodes through it):

- ``model(src, tgt_in)``: teacher forcing, (B, S) source ids and (B, T) target ids starting with
  BOS -> (B, T, target vocab) logits of the next target token;
- ``model(src)``: the translation, (B, L) target ids after BOS, padded with 0, by the model's
  ``decoding`` (greedy or beam search, generation/seq2seq.py);
- ``encode(src)`` -> Memory; ``start(memory, cache)`` -> a DecoderState holding BOS;
  ``next_logits(state)`` -> (B, V) logits of the token after ``state.tokens``;
  ``state.append(tokens)`` adds the chosen (B,) tokens; ``state.reorder(index)`` keeps the rows
  ``index`` (beam search).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from torchkeel.data.bundle import DataSpec
from torchkeel.errors import ConfigError
from torchkeel.generation.seq2seq import Decoding, translate
from torchkeel.models.layers import Probability, Width, keep_whole


def transformer_seq2seq(
    spec: DataSpec,
    *,
    layers: Width = 3,
    decoder_layers: Width | None = None,
    width: Width = 256,
    heads: Width = 4,
    ffn: Width = 1024,
    dropout: Probability = 0.1,
    share_embeddings: bool | None = None,
    beam: Width = 5,
    length_penalty: float = 1.0,
) -> nn.Module:
    """Encoder-decoder Transformer for translation: pre-norm, tied embeddings, beam search.

    Defaults: 3 + 3 layers, 256 wide, 4 heads of 64, feed-forward 1024 (the base model's shape
    at a quarter of its width and half its depth, for small corpora on a CPU). ``decoder_layers``
    defaults to ``layers``; ``share_embeddings`` to whether the vocabulary is joint; ``beam`` is
    the beam size of eval, predict and serve (1: greedy; validation during training is greedy)
    and ``length_penalty`` the exponent a finished hypothesis's log-probability is divided by its
    length to (fairseq's ``lenpen``).
    """
    source_vocab, target_vocab, joint = pair_sizes(spec, "transformer_seq2seq")
    if width % heads or width % 2:
        raise ConfigError(f"model.width ({width}) must be even and divisible by model.heads ({heads})")
    share = joint if share_embeddings is None else share_embeddings
    if share and source_vocab != target_vocab:
        raise ConfigError("model.share_embeddings needs one joint vocabulary (data.pairs.joint: true)")
    decoding = Decoding(beam=beam, length_penalty=length_penalty)
    return TransformerSeq2Seq(
        source_vocab, target_vocab, layers, decoder_layers or layers, width, heads, ffn, dropout, share, decoding
    )


def pair_sizes(spec: DataSpec, model: str) -> tuple[int, int, bool]:
    """(source vocabulary, target vocabulary, joint) of parallel text; other data is refused."""
    if "target_vocab_size" not in spec.extra:
        raise ConfigError(
            f"model '{model}' translates: it trains on parallel text (data: text_pairs); data '{spec.name}' is not"
        )
    return int(spec.extra["vocab_size"]), int(spec.extra["target_vocab_size"]), bool(spec.extra.get("joint", False))


PAD = 0


@dataclass
class Memory:
    """The encoder's output: states (B, S, C) and the mask of real source tokens (B, S)."""

    states: torch.Tensor
    mask: torch.Tensor

    def repeat(self, n: int) -> Memory:
        """Each sentence's memory ``n`` times in a row (a beam per sentence)."""
        return Memory(self.states.repeat_interleave(n, 0), self.mask.repeat_interleave(n, 0))


class Prefix:
    """The part of every seq2seq decoder state that decoding reads: the tokens so far (B, t),
    BOS first, and the memory they are decoded from."""

    def __init__(self, memory: Memory, cache: bool, bos: int):
        self.memory, self.cache = memory, cache
        self.tokens = torch.full((memory.states.shape[0], 1), bos, dtype=torch.long, device=memory.states.device)

    @property
    def length(self) -> int:
        return self.tokens.shape[1]

    def append(self, tokens: torch.Tensor) -> None:
        self.tokens = torch.cat([self.tokens, tokens[:, None]], 1)  # tokens: (B,)


class DecoderState(Prefix):
    """A Transformer decoder's state: each layer's cross-attention keys and values (computed once
    from the memory) and, with the cache, each layer's self-attention keys and values so far;
    without it, the whole prefix is run again each step."""

    def __init__(self, memory: Memory, cross: list[torch.Tensor], cache: bool, bos: int):
        super().__init__(memory, cache, bos)
        self.cross = cross
        self.kv: list[torch.Tensor | None] = [None] * len(cross)  # per layer (2, B, h, t, hd)

    def reorder(self, index: torch.Tensor, same_source: bool = False) -> None:
        """Keep the rows ``index``. ``same_source``: every row moves among copies of one
        sentence (beam search), whose memory and cross keys are equal, so those stay as they are."""
        if not same_source:
            self.memory = Memory(self.memory.states[index], self.memory.mask[index])
            self.cross = [kv[:, index] for kv in self.cross]
        self.kv = [kv[:, index] if kv is not None else None for kv in self.kv]
        self.tokens = self.tokens[index]


def sinusoids(length: int, width: int, device: torch.device) -> torch.Tensor:
    """(length, width) sinusoidal positions (Vaswani et al. 2017, section 3.5)."""
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    rate = torch.exp(torch.arange(0, width, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / width))
    table = torch.zeros(length, width, device=device)
    table[:, 0::2], table[:, 1::2] = torch.sin(position * rate), torch.cos(position * rate)
    return table


class Attention(nn.Module):
    """Multi-head attention of queries from ``x`` over keys and values from ``kv_source``."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.record: list[torch.Tensor] | None = None  # a list: each call's weights appended (the report)
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, width)

    def keys_values(self, source: torch.Tensor) -> torch.Tensor:
        b, s, c = source.shape  # -> (2, B, h, S, hd)
        return self.kv(source).view(b, s, 2, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)

    def forward(self, x: torch.Tensor, kv: torch.Tensor, mask: torch.Tensor | None, causal: bool = False):
        b, t, c = x.shape
        q = self.q(x).view(b, t, self.heads, c // self.heads).transpose(1, 2)  # (B, h, T, hd)
        p = self.dropout if self.training else 0.0
        if self.record is not None:  # the weights themselves, which the fused kernel does not return
            scores = (q @ kv[0].transpose(-1, -2)) / math.sqrt(q.shape[-1])  # (B, h, T, S)
            weights = scores.masked_fill(~mask, float("-inf")).softmax(-1) if mask is not None else scores.softmax(-1)
            self.record.append(weights.mean(1))  # (B, T, S), averaged over heads
            out = weights @ kv[1]
        else:
            out = F.scaled_dot_product_attention(q, kv[0], kv[1], attn_mask=mask, dropout_p=p, is_causal=causal)
        return self.out(out.transpose(1, 2).reshape(b, t, c))


class FeedForward(nn.Sequential):
    def __init__(self, width: int, ffn: int, dropout: float):
        super().__init__(nn.Linear(width, ffn), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn, width))


class EncoderLayer(nn.Module):
    def __init__(self, width: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn, self.ff, self.drop = Attention(width, heads, dropout), FeedForward(width, ffn, dropout), dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + F.dropout(self.attn(h, self.attn.keys_values(h), mask), self.drop, self.training)
        return x + F.dropout(self.ff(self.norm2(x)), self.drop, self.training)


class DecoderLayer(nn.Module):
    def __init__(self, width: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(width), nn.LayerNorm(width), nn.LayerNorm(width)
        self.self_attn, self.cross_attn = Attention(width, heads, dropout), Attention(width, heads, dropout)
        self.ff, self.drop = FeedForward(width, ffn, dropout), dropout

    def forward(self, x, cross_kv, src_mask, past: torch.Tensor | None = None):
        """x (B, T, C) new positions; ``past`` (2, B, h, t, hd) the earlier positions' keys and
        values (then T is 1 and needs no causal mask). Returns (x, this layer's keys and values)."""
        h = self.norm1(x)
        kv = self.self_attn.keys_values(h)
        if past is not None:
            kv = torch.cat([past, kv], dim=3)
        x = x + F.dropout(self.self_attn(h, kv, None, causal=past is None), self.drop, self.training)
        x = x + F.dropout(self.cross_attn(self.norm2(x), cross_kv, src_mask), self.drop, self.training)
        return x + F.dropout(self.ff(self.norm3(x)), self.drop, self.training), kv


class TransformerSeq2Seq(nn.Module):
    def __init__(self, source_vocab, target_vocab, layers, decoder_layers, width, heads, ffn, dropout, share, decoding):
        super().__init__()
        self.width, self.dropout, self.decoding = width, dropout, decoding
        self.target_embed = nn.Embedding(target_vocab, width, padding_idx=PAD)
        self.source_embed = self.target_embed if share else nn.Embedding(source_vocab, width, padding_idx=PAD)
        self.encoder = nn.ModuleList(EncoderLayer(width, heads, ffn, dropout) for _ in range(layers))
        self.decoder = nn.ModuleList(DecoderLayer(width, heads, ffn, dropout) for _ in range(decoder_layers))
        self.encoder_norm, self.decoder_norm = nn.LayerNorm(width), nn.LayerNorm(width)
        self.register_buffer("positions", sinusoids(256, width, torch.device("cpu")), persistent=False)
        for embed in {id(e): e for e in (self.source_embed, self.target_embed)}.values():
            nn.init.normal_(embed.weight, std=width**-0.5)
            nn.init.zeros_(embed.weight[PAD])
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def _embed(self, embed: nn.Embedding, ids: torch.Tensor, start: int = 0) -> torch.Tensor:
        end = start + ids.shape[1]
        if end > len(self.positions):  # longer than any seen so far: a longer table, once
            self.positions = sinusoids(max(end, 2 * len(self.positions)), self.width, ids.device)
        h = embed(ids) * math.sqrt(self.width) + self.positions[start:end].to(embed.weight.dtype)
        return F.dropout(h, self.dropout, self.training)  # (B, T, C)

    def encode(self, src: torch.Tensor) -> Memory:
        if not keep_whole():  # the batch's longest source, not the split's (an exported graph: all of it)
            src = src[:, : max(1, int((src != PAD).sum(1).max()))]
        mask = src != PAD  # (B, S)
        h, attend = self._embed(self.source_embed, src), mask[:, None, None, :]  # (B, 1, 1, S)
        for layer in self.encoder:
            h = layer(h, attend)
        return Memory(self.encoder_norm(h), mask)

    def start(self, memory: Memory, cache: bool = True, bos: int = 2) -> DecoderState:
        cross = [layer.cross_attn.keys_values(memory.states) for layer in self.decoder]
        return DecoderState(memory, cross, cache, bos)

    def _decode(self, tgt: torch.Tensor, state: DecoderState, start: int, cached: bool, last: bool = False):
        """(B, T, V) logits of each position of ``tgt`` (``last``: of its last position only)."""
        h, attend = self._embed(self.target_embed, tgt, start), state.memory.mask[:, None, None, :]
        for i, layer in enumerate(self.decoder):
            h, kv = layer(h, state.cross[i], attend, state.kv[i] if cached else None)
            if state.cache:
                state.kv[i] = kv
        h = h[:, -1:] if last else h  # decoding needs the next token's logits alone: one projection, not T
        return F.linear(self.decoder_norm(h), self.target_embed.weight)  # tied projection

    def next_logits(self, state: DecoderState) -> torch.Tensor:
        """(B, V) logits of the token after ``state.tokens``; with the cache only the last token
        is run through the decoder (the earlier ones' keys and values are in the state)."""
        if state.cache:
            t = state.length
            return self._decode(state.tokens[:, -1:], state, t - 1, cached=t > 1)[:, -1]
        return self._decode(state.tokens, state, 0, cached=False, last=True)[:, -1]

    @torch.inference_mode()
    def cross_attention(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """(B, T, S) the last decoder layer's attention over the source for each target position
        (teacher-forced on ``tgt_in``), averaged over heads: the report's attention maps."""
        attention = self.decoder[-1].cross_attn
        attention.record = []
        try:
            self(src, tgt_in)
            return attention.record[0]
        finally:
            attention.record = None

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor | None = None) -> torch.Tensor:
        memory = self.encode(src)
        if tgt_in is None:
            return translate(self, memory, self.decoding)
        state = self.start(memory, cache=False)
        return self._decode(tgt_in, state, 0, cached=False)  # (B, T, V)
