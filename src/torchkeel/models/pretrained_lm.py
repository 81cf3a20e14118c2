"""``pretrained_lm``: a pretrained causal language model (GPT-2 family, through Hugging Face
``transformers``' ``AutoModelForCausalLM``) from a local folder, or a hub name when online,
fine-tuned whole by the normal loop on a text corpus tokenised by the model's own tokeniser.

It keeps the ``gpt`` model's contract: ``model(x)`` maps token ids (B, T) to logits
(B, T, vocab_size); ``model.new_cache(batch, max_len)`` and ``model(x, cache=cache)`` run it
incrementally on transformers' own key/value cache (``past_key_values``), with explicit
positions, so generation, serving and export treat both models alike.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from torchkeel.data.bundle import DataSpec
from torchkeel.errors import ConfigError
from torchkeel.hf_models import context_length, load_pretrained
from torchkeel.models.gpt import lm_sizes
from torchkeel.models.layers import Width


def pretrained_lm(spec: DataSpec, *, source: str, block_size: Width | None = None) -> nn.Module:
    """Pretrained causal language model (GPT-2 family; Hugging Face folder or hub name), fine-tuned whole.

    The corpus must be tokenised by the model's own tokeniser (from the same ``source``).
    """
    vocab, data_block = lm_sizes(spec, "pretrained_lm")
    stored = spec.extra.get("tokenizer") or {}
    if stored.get("type") != "pretrained_lm" or stored.get("source") != source:
        raise ConfigError(
            f"model 'pretrained_lm' takes a corpus tokenised by its own tokeniser (from '{source}'); "
            f"data '{spec.name}' was tokenised by '{stored.get('source') or stored.get('type')}'"
        )
    lm = load_pretrained("causal_lm", source, "model.source")
    block = block_size or data_block
    positions = context_length(source, "model.source")
    if positions is not None and block > positions:
        raise ConfigError(f"model 'pretrained_lm': block_size {block} exceeds the {positions} positions of '{source}'")
    outputs = lm.get_output_embeddings().weight.shape[0]
    if vocab > outputs:
        raise ConfigError(
            f"model 'pretrained_lm': the data's {vocab} tokens exceed the {outputs} outputs of '{source}'"
        )
    return PretrainedLM(lm, block, vocab)


class PastCache:
    """transformers' key/value cache of a batch, and how many positions it holds."""

    def __init__(self, max_len: int):
        self.max_len, self.length, self.past = max_len, 0, None

    def reset(self) -> None:
        self.length, self.past = 0, None


class PretrainedLM(nn.Module):
    def __init__(self, lm: nn.Module, block_size: int, vocab_size: int):
        super().__init__()
        self.lm, self.block_size, self.vocab_size = lm, block_size, vocab_size
        # transformers 5 renamed ``past_key_values`` (argument and output) to ``cache``
        self._cache_arg = "cache" if "cache" in inspect.signature(lm.forward).parameters else "past_key_values"

    def new_cache(self, batch: int, max_len: int | None = None, device=None, dtype=None) -> PastCache:
        """An empty cache for up to ``max_len`` (default block_size) positions."""
        return PastCache(min(max_len or self.block_size, self.block_size))

    def forward(self, x: torch.Tensor, cache: PastCache | None = None) -> torch.Tensor:
        if cache is None:
            if x.shape[1] > self.block_size:
                raise ValueError(f"{x.shape[1]} positions exceed this model's context of {self.block_size} tokens")
            return self.lm(input_ids=x, use_cache=False).logits[..., : self.vocab_size]  # (B, T, vocab)
        b, t = x.shape
        if cache.length + t > cache.max_len:
            raise ValueError(f"{cache.length + t} positions exceed this model's context of {cache.max_len} tokens")
        positions = torch.arange(cache.length, cache.length + t, device=x.device).expand(b, t)
        out = self.lm(input_ids=x, position_ids=positions, use_cache=True, **{self._cache_arg: cache.past})
        cache.past, cache.length = getattr(out, self._cache_arg), cache.length + t
        return out.logits[..., : self.vocab_size]  # (B, T_new, vocab)
