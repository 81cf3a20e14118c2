"""Generation speed with and without the KV cache: tokens per second at ``new_tokens`` new tokens
(500 by default, as the language-model issue's target states), for benchmarks/ to call and
record; no test times anything."""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

from torchkeel.generation.loop import sample_steps
from torchkeel.generation.sampling import Sampling


def tokens_per_second(
    model: nn.Module, new_tokens: int = 500, cache: bool = True, prompt: int = 1, seed: int = 0
) -> float:
    """New tokens per second of wall time, one sequence, from a ``prompt``-token start."""
    device = next(model.parameters()).device
    model.eval()
    rng = torch.Generator(device).manual_seed(seed)
    ids = torch.zeros(1, prompt, dtype=torch.long, device=device)
    warmup = sample_steps(model, ids, 2, Sampling(), rng, cache)  # first calls pay for allocation
    list(warmup)
    _sync(device)
    start = time.perf_counter()
    count = sum(1 for _ in sample_steps(model, ids, new_tokens, Sampling(), rng, cache))
    _sync(device)
    return count / (time.perf_counter() - start)


def cache_speedup(model: nn.Module, new_tokens: int = 500, rounds: int = 5) -> dict[str, float]:
    """Tokens/s with and without the cache, measured in alternation ``rounds`` times (so a
    change in the machine's load hits both), and the median of the rounds' ratios; the
    tokens/s are the medians too."""
    pairs = [(tokens_per_second(model, new_tokens, cache=True), tokens_per_second(model, new_tokens, cache=False))
             for _ in range(rounds)]  # fmt: skip
    return {
        "tokens_per_s_cache": statistics.median(c for c, _ in pairs),
        "tokens_per_s_no_cache": statistics.median(f for _, f in pairs),
        "speedup": statistics.median(c / f for c, f in pairs),
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
