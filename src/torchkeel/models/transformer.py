"""Attention: a ``transformer`` text classifier and a small vision transformer (``vit``).

Both are one trunk: tokens (word embeddings or image patches), an optional [CLS] token,
learned positional embeddings, pre-norm encoder blocks (LayerNorm before attention and MLP,
as in GPT-2 and ViT, which trains stably without warmup tricks) on
``F.scaled_dot_product_attention``, a final LayerNorm, CLS or mean pooling, a linear head.
``attention_maps(x)`` returns every layer's attention weights for a given input.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from torchkeel.data.bundle import DataSpec
from torchkeel.errors import ConfigError
from torchkeel.models.cnn import image_shape
from torchkeel.models.layers import Probability, Width
from torchkeel.models.rnn import text_vocab_size


def transformer(
    spec: DataSpec,
    *,
    dim: Width = 64,
    heads: Width = 4,
    layers: Width = 2,
    mlp_ratio: Width = 4,
    dropout: Probability = 0.1,
    pooling: Literal["cls", "mean"] = "cls",
) -> nn.Module:
    """Transformer encoder text classifier: token + position embeddings, padding mask, pre-norm blocks."""
    _check_heads(dim, heads)
    length = spec.input_shape[0]
    embed = nn.Embedding(text_vocab_size(spec, "transformer"), dim, padding_idx=0)
    # GPT-2's init: token embeddings at the scale of the positional ones (std 0.02); with
    # torch's default N(0, 1) the positions are drowned out and word order is learnt late
    nn.init.normal_(embed.weight, std=0.02)
    with torch.no_grad():
        embed.weight[0].zero_()  # the pad row stays zero
    return TransformerNet(embed, length, dim, heads, layers, mlp_ratio, dropout, pooling, spec.output_size, text=True)


def vit(
    spec: DataSpec,
    *,
    patch: Width | None = None,
    dim: Width = 64,
    heads: Width = 4,
    layers: Width = 4,
    mlp_ratio: Width = 2,
    dropout: Probability = 0.0,
    pooling: Literal["cls", "mean"] = "cls",
) -> nn.Module:
    """Small vision transformer (Dosovitskiy et al. 2020): patch embedding, CLS token, pre-norm blocks.

    ``patch`` defaults to the smallest side (at least 2 px) giving at most an 8x8 grid of
    patches, near ViT-B/32's 7x7 at 224 px: 2 px for 8 px images, 4 px for 28 and 32 px.
    Pixels beyond the last whole patch are dropped.
    """
    _check_heads(dim, heads)
    c, h, w = image_shape(spec, "vit")
    patch = patch or max(2, math.ceil(max(h, w) / 8))
    if patch > min(h, w):
        raise ConfigError(f"vit: model.patch {patch} is larger than the {h}x{w} images of data '{spec.name}'")
    embed = PatchEmbedding(c, dim, patch)
    tokens = (h // patch) * (w // patch)
    return TransformerNet(embed, tokens, dim, heads, layers, mlp_ratio, dropout, pooling, spec.output_size, text=False)


def _check_heads(dim: int, heads: int) -> None:
    if dim % heads:
        raise ConfigError(f"model.dim ({dim}) must be divisible by model.heads ({heads})")


class PatchEmbedding(nn.Module):
    """Non-overlapping ``patch`` x ``patch`` squares, each linearly projected to ``dim``."""

    def __init__(self, channels: int, dim: int, patch: int):
        super().__init__()
        self.proj = nn.Conv2d(channels, dim, patch, stride=patch)  # a linear map per patch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, C, H, W) -> (B, N patches, dim)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self, x: torch.Tensor, keep: torch.Tensor | None, return_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``keep`` (B, T) marks real tokens; padding is never attended to. With
        ``return_weights`` the attention is computed explicitly to return its weights
        (B, heads, T, T); otherwise by the fused kernel, which does not expose them."""
        b, t, c = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)  # 3 x (B, h, T, hd)
        mask = keep[:, None, None, :] if keep is not None else None  # (B, 1, 1, T), True = attend
        weights = None
        if return_weights:
            scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, h, T, T)
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            weights = scores.softmax(-1)
            out = weights @ v
        else:
            p = self.dropout if self.training else 0.0
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        return self.proj(out.transpose(1, 2).reshape(b, t, c)), weights


class Block(nn.Module):
    """Pre-norm encoder block: x + attention(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int, dropout: float):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, dropout)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim), nn.Dropout(dropout)
        )
        self.drop = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, keep: torch.Tensor | None, return_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attended, weights = self.attn(self.norm1(x), keep, return_weights)
        x = x + self.drop(attended)
        return x + self.mlp(self.norm2(x)), weights


class TransformerNet(nn.Module):
    """tokens -> [CLS] + positions -> blocks -> LayerNorm -> pooling -> head."""

    def __init__(
        self,
        embed: nn.Module,
        tokens: int,
        dim: int,
        heads: int,
        layers: int,
        mlp_ratio: int,
        dropout: float,
        pooling: str,
        outputs: int,
        text: bool,
    ):
        super().__init__()
        self.embed, self.text, self.pooling, self.tokens = embed, text, pooling, tokens
        extra = 1 if pooling == "cls" else 0
        self.cls = nn.Parameter(torch.zeros(1, 1, dim)) if extra else None
        self.positions = nn.Parameter(torch.randn(1, tokens + extra, dim) * 0.02)  # ViT's init
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encode(x)[0])  # (B, outputs)

    @torch.no_grad()
    def attention_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Attention weights of every layer for input ``x``: a list of (B, heads, T, T), rows
        summing to 1 over the keys. With CLS pooling token 0 is [CLS] and the input's tokens
        (or patches, row by row) follow."""
        return self.encode(x, return_weights=True)[1]

    def encode(self, x: torch.Tensor, return_weights: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The pooled representation (B, dim) and, with ``return_weights``, the attention maps."""
        keep = self._keep_mask(x)
        h = self.embed(x)  # (B, T, dim)
        if h.shape[1] > self.tokens:
            raise ValueError(f"input has {h.shape[1]} tokens; this model was built for at most {self.tokens}")
        if self.cls is not None:
            h = torch.cat([self.cls.expand(len(h), -1, -1), h], dim=1)
            keep = None if keep is None else F.pad(keep, (1, 0), value=True)  # [CLS] is always real
        h = self.drop(h + self.positions[:, : h.shape[1]])
        maps = []
        for block in self.blocks:
            h, weights = block(h, keep, return_weights)
            if weights is not None:
                maps.append(weights)
        h = self.norm(h)
        if self.cls is not None:
            return h[:, 0], maps
        if keep is None:
            return h.mean(1), maps
        real = keep.unsqueeze(-1).to(h.dtype)  # (B, T, 1)
        return (h * real).sum(1) / real.sum(1), maps

    def _keep_mask(self, x: torch.Tensor) -> torch.Tensor | None:
        if not self.text:
            return None
        keep = x != 0  # (B, L); pad index 0
        keep[:, 0] = True  # an empty text still has one (pad) token to attend to, never a NaN row
        return keep
