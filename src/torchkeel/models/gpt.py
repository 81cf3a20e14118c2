"""``gpt``: a decoder-only Transformer language model (GPT-2's architecture, as in nanoGPT).

Token + learned position embeddings, ``n_layer`` pre-norm blocks (LayerNorm before causal
self-attention and before the MLP) on ``F.scaled_dot_product_attention``, a final LayerNorm and
a linear head whose weight is the token embedding's (weight tying, Press & Wolf 2017). Init as
GPT-2 (Radford et al. 2019) and nanoGPT: N(0, 0.02) everywhere, zero biases, and the two
projections that write into the residual stream scaled by 1/sqrt(2 * n_layer), so the
residual's variance does not grow with depth.

``model(x)`` maps token ids (B, T) to next-token logits (B, T, vocab_size).

KV cache, for generation: ``cache = model.new_cache(batch, max_len, device, dtype)`` holds every
layer's keys and values for up to ``max_len`` (<= block_size) positions; ``model(x, cache=cache)``
takes only the *new* tokens (B, T_new), which sit at positions ``cache.length`` onwards,
returns their logits (B, T_new, vocab_size) and extends the cache by T_new (one new token goes
through ``GPT.decode``, the generation step written out for that case). ``cache.reset()``
empties it (to start again from a cropped context). The cache changes no logits beyond
rounding: a cached step gives what a full forward pass over the whole sequence gives, to 1e-5
in float32 (tests/test_gpt.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from torchkeel.data.bundle import DataSpec
from torchkeel.errors import ConfigError
from torchkeel.models.layers import Probability, Width


def gpt(
    spec: DataSpec,
    *,
    n_layer: Width = 4,
    n_head: Width = 4,
    n_embd: Width = 128,
    block_size: Width | None = None,
    dropout: Probability = 0.0,
    bias: bool = True,
) -> nn.Module:
    """Decoder-only Transformer language model (GPT-2 style): causal attention, tied embeddings.

    Defaults are nanoGPT's CPU "baby GPT" (4 layers, 4 heads, 128 dims); ``block_size`` (the
    longest context, tokens) defaults to the data's.
    """
    vocab, data_block = lm_sizes(spec, "gpt")
    if n_embd % n_head:
        raise ConfigError(f"model.n_embd ({n_embd}) must be divisible by model.n_head ({n_head})")
    return GPT(vocab, block_size or data_block, n_layer, n_head, n_embd, dropout, bias)


def lm_sizes(spec: DataSpec, model: str) -> tuple[int, int]:
    """(vocab_size, block_size) of a language-model corpus; other data is refused in one line."""
    if "vocab_size" not in spec.extra or "block_size" not in spec.extra:
        raise ConfigError(
            f"model '{model}' is a causal language model: it trains on a text corpus (data: text_file); "
            f"data '{spec.name}' is not one (for classifying texts use model 'transformer')"
        )
    return int(spec.extra["vocab_size"]), int(spec.extra["block_size"])


class KVCache:
    """Keys and values of every layer for up to ``max_len`` positions, one buffer per layer:
    (2, B, heads, max_len, hd), keys then values (one copy a step writes both)."""

    def __init__(self, layers: int, batch: int, heads: int, max_len: int, head_dim: int, device, dtype):
        shape = (2, batch, heads, max_len, head_dim)
        self.kv = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(layers)]
        self.max_len, self.length = max_len, 0
        # for one-token steps (GPT.decode): attention over every slot of the buffer, the slots
        # after the new token's position masked out (0 / -inf added to the scores; exp(-inf) is
        # exactly 0, so the unused slots change nothing), one mask row per position
        allowed = torch.arange(max_len, device=device) <= torch.arange(max_len, device=device)[:, None]
        masks = torch.zeros(max_len, max_len, device=device, dtype=dtype).masked_fill(~allowed, float("-inf"))
        self.masks = [masks[p : p + 1] for p in range(max_len)]  # (1, max_len) each
        # GPT.decode's plan (each block's tensors, the weights transposed), made on its first
        # step, and the weights it was made from with their versions at the time
        self.plan: list[tuple] | None = None
        self.ends: tuple = ()  # token and position embeddings, final norm, head
        self.sources: list[torch.Tensor] = []
        self.versions: list[int] = []

    def reset(self) -> None:
        self.length = 0

    def store(self, layer: int, kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new positions' keys and values (2, B, h, T_new, hd); return all so far."""
        end = self.length + kv.shape[3]
        buffer = self.kv[layer]
        buffer[:, :, :, self.length : end] = kv
        return buffer[0, :, :, :end], buffer[1, :, :, :end]


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool):
        super().__init__()
        self.n_head, self.dropout = n_head, dropout
        self.qkv = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.proj = nn.Linear(n_embd, n_embd, bias=bias)  # writes into the residual stream

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        b, t, c = x.shape
        qkv = _linear(x, self.qkv).view(b, t, 3, self.n_head, c // self.n_head).permute(2, 0, 3, 1, 4)
        q, p = qkv[0], self.dropout if self.training else 0.0  # qkv: (3, B, h, T, hd)
        if cache is None or cache.length == 0:
            if cache is not None:
                cache.store(layer, qkv[1:])
            out = F.scaled_dot_product_attention(q, qkv[1], qkv[2], dropout_p=p, is_causal=True)
        else:
            past = cache.length
            k, v = cache.store(layer, qkv[1:])  # (B, h, past + T, hd)
            # query i sits at position past + i and sees keys 0 .. past + i (one new token: all of them)
            mask = None
            if t > 1:
                mask = torch.arange(past + t, device=x.device) <= past + torch.arange(t, device=x.device)[:, None]
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        return _dropout(_linear(out.transpose(1, 2).reshape(b, t, c), self.proj), p)


class Block(nn.Module):
    """Pre-norm decoder block: x + attention(LN(x)), then x + MLP(LN(x)).

    The forward passes call torch's functions on the submodules' parameters rather than the
    submodules themselves: a one-token generation step is a few dozen tiny ops, and the
    per-call cost of a module (its hooks' checks) was a third of that step's time on a CPU."""

    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(n_embd, bias=bias), nn.LayerNorm(n_embd, bias=bias)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout, bias)
        # a Sequential for its parameter names (mlp.0, mlp.2, as saved runs hold them);
        # forward calls F.gelu, the GELU module only keeps the indices
        self.mlp = nn.Sequential(
            nn.Linear(n_embd, 4 * n_embd, bias=bias),
            nn.GELU(),
            nn.Linear(4 * n_embd, n_embd, bias=bias),  # writes into the residual stream
        )
        self.dropout = dropout

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        x = x + self.attn(_norm(x, self.ln1), cache, layer)
        hidden = F.gelu(_linear(_norm(x, self.ln2), self.mlp[0]))
        return x + _dropout(_linear(hidden, self.mlp[2]), self.dropout if self.training else 0.0)


def _linears(block: Block) -> tuple[nn.Linear, ...]:
    return block.attn.qkv, block.attn.proj, block.mlp[0], block.mlp[2]


Linear = tuple[torch.Tensor | None, torch.Tensor]  # (bias or None, weight.T), as _transposed makes them


def _transposed(weight: torch.Tensor, bias: torch.Tensor | None, scale: float = 1.0) -> Linear:
    """(bias, weight.T), both times ``scale``, for ``torch.addmm(bias, x, weight_t)`` (or
    ``torch.mm`` without a bias): on a CPU a contiguous copy (MKL's one-row product against the
    transposed view is the slower one), elsewhere the view (cuBLAS takes either; no second copy
    of the weights in GPU memory; a scale is only asked for on a CPU, see GPT._plan)."""
    if scale != 1.0:
        weight, bias = weight * scale, (None if bias is None else bias * scale)
    return bias, weight.t().contiguous() if weight.device.type == "cpu" else weight.t()


def _erf_gelu(weight: torch.Tensor) -> bool:
    """Whether GPT.decode computes the MLP's GELU from erf on scaled weights (see GPT._plan)."""
    return weight.device.type == "cpu" and weight.dtype == torch.float32


def _mm(x: torch.Tensor, linear: Linear) -> torch.Tensor:
    bias, weight_t = linear
    return torch.mm(x, weight_t) if bias is None else torch.addmm(bias, x, weight_t)


def _plus(h: torch.Tensor, x: torch.Tensor, linear: Linear, fused: bool) -> torch.Tensor:
    """The residual stream ``h`` plus a layer's output, out of place: one ``addmm`` for a layer
    without a bias (``fused``: not under autocast, which would cast ``h`` to its lower precision;
    forward adds in the stream's own dtype), else the product then the sum, as forward does."""
    bias, weight_t = linear
    return torch.addmm(h, x, weight_t) if fused and bias is None else h + _mm(x, linear)


def _linear(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    return F.linear(x, layer.weight, layer.bias)


def _norm(x: torch.Tensor, ln: nn.LayerNorm) -> torch.Tensor:
    return F.layer_norm(x, ln.normalized_shape, ln.weight, ln.bias, ln.eps)


def _dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    return F.dropout(x, p) if p else x


class GPT(nn.Module):
    """token + position embeddings -> blocks -> LayerNorm -> tied linear head."""

    def __init__(self, vocab: int, block_size: int, n_layer: int, n_head: int, n_embd: int, dropout: float, bias: bool):
        super().__init__()
        self.block_size, self.n_head, self.vocab_size = block_size, n_head, vocab
        self.tok = nn.Embedding(vocab, n_embd)
        self.pos = nn.Embedding(block_size, n_embd)
        self.dropout = dropout
        self.blocks = nn.ModuleList(Block(n_embd, n_head, dropout, bias) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd, bias=bias)
        self.head = nn.Linear(n_embd, vocab, bias=False)
        self.head.weight = self.tok.weight  # weight tying: one (vocab, n_embd) matrix
        self._init_weights(n_layer)

    def _init_weights(self, n_layer: int) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        for block in self.blocks:  # GPT-2: residual projections scaled by 1/sqrt(2 * n_layer)
            for proj in (block.attn.proj, block.mlp[2]):
                nn.init.normal_(proj.weight, std=0.02 / math.sqrt(2 * n_layer))

    def new_cache(self, batch: int, max_len: int | None = None, device=None, dtype=None) -> KVCache:
        """An empty KV cache for ``batch`` sequences of up to ``max_len`` (default block_size) tokens."""
        max_len = min(max_len or self.block_size, self.block_size)
        hd = self.tok.embedding_dim // self.n_head
        device, dtype = device or self.tok.weight.device, dtype or self.tok.weight.dtype
        return KVCache(len(self.blocks), batch, self.n_head, max_len, hd, device, dtype)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        if cache is not None and x.shape[1] == 1 and 0 < cache.length < cache.max_len and not self.training:
            return self.decode(x[:, 0], cache)[:, None]
        start = cache.length if cache is not None else 0
        t = x.shape[1]
        limit = cache.max_len if cache is not None else self.block_size
        if start + t > limit:
            raise ValueError(f"{start + t} positions exceed this model's context of {limit} tokens; crop the input")
        h = F.embedding(x, self.tok.weight) + self.pos.weight[start : start + t]  # (B, T, C)
        h = _dropout(h, self.dropout if self.training else 0.0)
        for i, block in enumerate(self.blocks):
            h = block(h, cache, i)
        if cache is not None:
            cache.length += t
        return F.linear(_norm(h, self.ln_f), self.head.weight)  # (B, T, vocab)

    def _plan(self, cache: KVCache) -> None:
        """Each block's tensors as GPT.decode reads them, looked up once per cache (a module's
        attribute lookup costs about a microsecond, and a step made ~100 of them): the layer
        norms' (weight, bias, eps) and the linear layers' (bias, weight.T).

        For float32 weights on a CPU the MLP's first layer (weight and bias) and the second's
        weight are scaled by 1/sqrt(2), so that its GELU, x/2 (1 + erf(x/sqrt(2))), becomes
        u (1 + erf(u)) of the scaled output u: two plain ops, where torch's own GELU on float32
        goes through oneDNN on a CPU (~20 us of set-up a call on one row against ~4 us of
        arithmetic). Elsewhere ``F.gelu`` runs on views of the weights.

        The versions of the tensors copied here (the weights; the one scaled bias) are checked at
        every step, so a weight changed in place (training, load_state_dict) between two steps is
        copied again; the rest are used by reference. A parameter replaced by a new object,
        written through ``.data`` or moved (``model.to``) changes no version: it needs a new cache."""
        plan, sources = [], []
        for block in self.blocks:
            (qkv, proj, up, down), erf = _linears(block), _erf_gelu(block.mlp[0].weight)
            root = 2**-0.5 if erf else 1.0
            norms = [(ln.weight, ln.bias, ln.eps) for ln in (block.ln1, block.ln2)]
            plan.append((
                norms[0], _transposed(qkv.weight, qkv.bias), _transposed(proj.weight, proj.bias), norms[1],
                _transposed(up.weight, up.bias, root),
                (down.bias, _transposed(down.weight, None, root)[1]),  # its bias is added after the sum, unscaled
                erf,
            ))  # fmt: skip
            sources += [m.weight for m in (qkv, proj, up, down)] + ([up.bias] if erf and up.bias is not None else [])
        cache.plan, cache.sources, cache.versions = plan, sources, [w._version for w in sources]
        lnf = (self.ln_f.weight, self.ln_f.bias, self.ln_f.eps)
        cache.ends = (self.tok.weight, self.pos.weight, lnf, self.head.weight)

    def decode(self, tokens: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """One generation step: the next tokens (B,) at position ``cache.length`` -> their logits
        (B, vocab), the cache extended by one. The blocks' arithmetic on (B, C) rows, written out
        for this case: no (B, 1, C) views, attention over the whole buffer with the position's
        mask row instead of a slice of it per layer, the new keys and values written in one copy,
        the matrix-vector products on transposed copies of the weights made once per cache
        (MKL's one-row product with a transposed weight view was ~25 us slower per layer on a
        2-core host), a layer without a bias added to the residual in its own product (not under
        autocast), the GELU as ``_plan`` says, and every
        tensor read from the cache's plan (``_plan``) rather than looked up on the modules. A step
        is a few dozen tiny ops; tests/test_gpt.py checks that it gives the logits of a full
        forward pass, benchmarks/RESULTS.md has its time. generation/loop.py calls it directly."""
        if cache.plan is None or [w._version for w in cache.sources] != cache.versions:
            self._plan(cache)  # the first step, or a weight was changed in place (training, loading)
        tok, position, lnf, head = cache.ends
        pos, (b, c) = cache.length, (tokens.shape[0], tok.shape[1])
        heads, mask = self.n_head, cache.masks[pos]
        fused = not torch.is_autocast_enabled(tok.device.type)
        h = tok[tokens] + position[pos]  # (B, C)
        for kv, (ln1, qkv_w, proj_w, ln2, up_w, down_w, erf) in zip(cache.kv, cache.plan, strict=True):
            qkv = _mm(F.layer_norm(h, (c,), *ln1), qkv_w).view(b, 3, heads, c // heads)
            kv[:, :, :, pos] = qkv[:, 1:].transpose(0, 1)  # (2, B, h, hd) into slot pos
            out = F.scaled_dot_product_attention(qkv[:, 0, :, None], kv[0], kv[1], attn_mask=mask)
            h = _plus(h, out.view(b, c), proj_w, fused)
            u = _mm(F.layer_norm(h, (c,), *ln2), up_w)  # the MLP's pre-activation (/ sqrt(2) where erf)
            hidden = torch.addcmul(u, u, torch.erf(u)) if erf else F.gelu(u)  # erf: GELU * sqrt(2), see _plan
            h = _plus(h, hidden, down_w, fused)
        cache.length += 1
        return F.linear(F.layer_norm(h, (c,), *lnf), head)
