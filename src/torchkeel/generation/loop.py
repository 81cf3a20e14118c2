"""The sampling loop: one new token per step per row, with or without the model's KV cache.

The context is cropped to the model's ``block_size``: while the sequence fits, the model sees all
of it; when it would exceed the block, the context restarts from its last ``keep`` tokens
(three quarters of the block), so a cached model refills its cache once per quarter block
rather than at every step (learned positions cannot shift a cache). Both paths use the same
context at every step, so they compute the same logits (tests/test_generation.py); the cache
only saves the work of recomputing the keys and values of the tokens already seen.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from torchkeel.generation.sampling import Sampling, next_tokens


def kept_context(block_size: int) -> int:
    """Tokens kept when the context would outgrow the block."""
    return block_size - max(1, block_size // 4)


@dataclass
class Step:
    tokens: torch.Tensor  # (B,) the tokens drawn
    logits: torch.Tensor  # (B, V) the model's logits they were drawn from


@torch.inference_mode()
def sample_steps(
    model: nn.Module,
    ids: torch.Tensor,
    max_new: int,
    sampling: Sampling,
    generator: torch.Generator | None = None,
    cache: bool = True,
) -> Iterator[Step]:
    """Draw ``max_new`` tokens after the prompts ``ids`` (B, L), one Step at a time."""
    block, (rows, length) = model.block_size, ids.shape
    kv = model.new_cache(rows, block, ids.device) if cache else None
    # a model with a one-token step (GPT.decode) is called on it directly once its cache is
    # filled: no module call, no (B, 1) views in and out
    decode = getattr(model, "decode", None) if kv is not None and not model.training else None
    sequence = torch.empty(rows, length + max_new, dtype=ids.dtype, device=ids.device)  # prompt, then each draw
    sequence[:, :length] = ids
    start = max(0, length - block)  # a prompt longer than the block: its last block tokens
    for n in range(length, length + max_new):
        if n - start > block:
            start = n - kept_context(block)
            if kv is not None:
                kv.reset()
        # cached: only the tokens not yet in the cache; else the whole context again
        if decode is not None and 0 < kv.length == n - start - 1:
            logits = decode(sequence[:, n - 1], kv)
        else:
            fresh = sequence[:, start + kv.length : n] if kv is not None else sequence[:, start:n]
            logits = (model(fresh, cache=kv) if kv is not None else model(fresh))[:, -1]
        tokens = next_tokens(logits, sequence[:, :n], sampling, generator)
        sequence[:, n] = tokens
        yield Step(tokens, logits)
