"""Choosing the next token from a language model's logits: the sampling options, checked where
they enter, and the filters applied in Hugging Face ``generate``'s order (repetition penalty,
temperature, top-k, top-p), each a small function on (B, V) logits."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from torchkeel.errors import ConfigError

MAX_NEW_TOKENS = 10_000  # per request: enough for pages of text, bounded so a typo is not an hour's run


@dataclass(frozen=True)
class Sampling:
    """How the next token is drawn.

    - ``temperature`` > 0 divides the logits (below 1: sharper; above 1: flatter).
    - ``top_k``: only the k most likely tokens (None: all); ``top_k=1`` is greedy decoding.
    - ``top_p`` in (0, 1]: nucleus sampling (Holtzman et al. 2020), only the most likely tokens
      whose probabilities sum to at least ``top_p``; 1 keeps all.
    - ``repetition_penalty`` >= 1: the logits of tokens already in the context are divided by it
      when positive and multiplied when negative (CTRL, Keskar et al. 2019); 1 turns it off.
    """

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float = 1.0
    repetition_penalty: float = 1.0

    def check(self) -> Sampling:
        if not self.temperature > 0:  # also refuses NaN
            raise ConfigError(f"temperature must be > 0 (got {self.temperature}); use --top-k 1 for greedy decoding")
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError(f"top-k must be >= 1 (got {self.top_k}); leave it out to keep every token")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top-p must be in (0, 1] (got {self.top_p}); 1 keeps every token")
        if not self.repetition_penalty >= 1:
            raise ConfigError(f"repetition penalty must be >= 1 (got {self.repetition_penalty}); 1 turns it off")
        return self


def check_max_tokens(max_tokens: int, limit: int = MAX_NEW_TOKENS) -> int:
    if not 1 <= max_tokens <= limit:
        raise ConfigError(f"max tokens must be between 1 and {limit:,} (got {max_tokens:,})")
    return max_tokens


def penalise_repeats(logits: torch.Tensor, context: torch.Tensor, penalty: float) -> torch.Tensor:
    """(B, V) logits with every token of ``context`` (B, L) made less likely by ``penalty``."""
    if penalty == 1.0:
        return logits
    seen = logits.gather(1, context)  # (B, L)
    seen = torch.where(seen > 0, seen / penalty, seen * penalty)
    return logits.scatter(1, context, seen)


def keep_top_k(logits: torch.Tensor, k: int | None) -> torch.Tensor:
    """Exactly the k largest logits of each row kept, the rest -inf."""
    if k is None or k >= logits.shape[-1]:
        return logits
    values, index = torch.topk(logits, k, dim=-1)  # (B, k)
    return torch.full_like(logits, float("-inf")).scatter(-1, index, values)


def keep_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """The smallest set of most likely tokens whose probability sums to >= p kept, the rest -inf:
    a token stays when the tokens more likely than it hold less than p (the first always does)."""
    if p >= 1.0:
        return logits
    ordered, index = torch.sort(logits, dim=-1, descending=True)  # (B, V)
    probs = ordered.softmax(-1)
    before = probs.cumsum(-1) - probs  # mass of the strictly more likely tokens
    ordered = ordered.masked_fill(before >= p, float("-inf"))
    return torch.empty_like(logits).scatter(-1, index, ordered)


def next_tokens(
    logits: torch.Tensor, context: torch.Tensor, sampling: Sampling, generator: torch.Generator | None
) -> torch.Tensor:
    """One token per row (B,) drawn from (B, V) logits given the context so far (B, L).

    Drawn as the winner of exponential races: token i wins argmax p_i / E_i with E_i ~ Exp(1)
    with probability p_i (the Gumbel-max trick in another form), the same distribution as
    ``torch.multinomial`` in half its time on one CPU row of 65 tokens (~16 vs ~32 us), and no host
    sync on a GPU."""
    logits = penalise_repeats(logits.float(), context, sampling.repetition_penalty)
    if sampling.temperature != 1.0:
        logits = logits / sampling.temperature
    logits = keep_top_k(logits, sampling.top_k)
    probs = keep_top_p(logits, sampling.top_p).softmax(-1)
    races = torch.empty_like(probs).exponential_(generator=generator)
    return (probs / races).argmax(-1)
