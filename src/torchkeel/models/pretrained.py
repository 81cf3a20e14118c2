"""``pretrained_text``: a pretrained Transformer encoder (BERT family, through Hugging Face
``transformers``), mean-pooled over the text's tokens, then a linear classification head.

- ``finetune: false`` (frozen): the encoder is a fixed feature extractor. Its pooled output
  for each distinct token row is computed once and cached, so a run costs one forward pass
  over the data plus head training: epochs after the first take milliseconds.
- ``finetune: true``: every encoder weight trains with the head (use a small learning rate,
  ~2e-5 to 5e-5 with adamw, as Devlin et al. 2019 did).

Mean pooling over non-pad tokens, as sentence-transformers' models (e.g. all-MiniLM-L6-v2)
were trained to be used (Reimers & Gurevych 2019). The data must be tokenised by the same
encoder's tokeniser (``data.text.tokenizer: pretrained``, which naming this model sets).
"""

from __future__ import annotations

import torch
from torch import nn

from torchkeel.data.bundle import DataSpec
from torchkeel.data.kinds import kind_of
from torchkeel.data.pretrained_tokenizer import ID_OFFSET
from torchkeel.errors import ConfigError
from torchkeel.hf_models import load_pretrained
from torchkeel.models.layers import Probability

# rows per encoder pass: a random batch of 64 AG News texts is padded to ~3x its mean length;
# sorted groups of 8 waste almost none, and 8 rows of ~50 tokens still keep matrix products
# efficient (2.4x the texts/s of the whole batch at once on 1 and on 2 CPU threads)
GROUP = 8


class PretrainedTextClassifier(nn.Module):
    def __init__(self, encoder: nn.Module, hidden: int, outputs: int, finetune: bool, dropout: float):
        super().__init__()
        self.encoder, self.finetune = encoder, finetune
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, outputs))
        if not finetune:
            self.encoder.requires_grad_(False)
        # frozen: token row (its bytes) -> pooled features (hidden,); not weights, never saved
        self.feature_cache: dict[bytes, torch.Tensor] = {}

    def train(self, mode: bool = True) -> PretrainedTextClassifier:
        super().train(mode)
        if not self.finetune:
            self.encoder.eval()  # a frozen encoder keeps its dropout off, so its features are fixed
        return self

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        # attribution tools (captum) hook the embedding layer and need the real pass through it
        hooked = any(m._forward_hooks or m._forward_pre_hooks for m in self.encoder.modules())
        if hooked:  # and see the full width, as the baselines they compare with
            return self.head(self.pooled(tokens, trim=False))
        features = self.pooled(tokens) if self.finetune else self.cached(tokens)  # (B, hidden)
        return self.head(features)  # (B, outputs)

    def pooled(self, tokens: torch.Tensor, trim: bool = True) -> torch.Tensor:
        """Mean of the encoder's last hidden states over non-pad tokens: (B, L) -> (B, hidden).

        ``trim``: rows are encoded in groups of ``GROUP`` of similar length, each cut at its
        longest text, so that little of the work is spent on padding (the result is the same)."""
        if not trim or torch.jit.is_tracing() or torch.compiler.is_compiling():  # one graph, whole width
            return self._pooled(tokens)
        lengths = (tokens != 0).sum(1)  # (B,)
        order = torch.argsort(lengths, stable=True)
        widths = lengths[order].tolist()  # one read of the lengths, ascending
        out = []
        for start in range(0, len(widths), GROUP):
            width = max(1, widths[min(start + GROUP, len(widths)) - 1])  # the group's longest
            out.append(self._pooled(tokens[order[start : start + GROUP], :width]))
        return torch.cat(out).index_select(0, torch.argsort(order))  # back in the batch's order

    def _pooled(self, tokens: torch.Tensor) -> torch.Tensor:
        mask = tokens != 0  # (B, L)
        ids = (tokens - ID_OFFSET).clamp(min=0)  # back to the encoder's ids; pads masked out below
        states = self.encoder(input_ids=ids, attention_mask=mask.long()).last_hidden_state  # (B, L, hidden)
        weights = mask.unsqueeze(-1).to(states.dtype)  # (B, L, 1)
        return (states * weights).sum(1) / weights.sum(1).clamp(min=1.0)

    def cached(self, tokens: torch.Tensor) -> torch.Tensor:
        keys = [row.tobytes() for row in tokens.cpu().numpy()]
        missing = [i for i, key in enumerate(keys) if key not in self.feature_cache]
        if missing:
            with torch.no_grad():
                features = self.pooled(tokens[missing])  # (M, hidden), one encoder pass per new text
            for i, row in zip(missing, features, strict=True):
                self.feature_cache[keys[i]] = row.clone()
        return torch.stack([self.feature_cache[key] for key in keys])  # (B, hidden)


def pretrained_text(spec: DataSpec, *, encoder: str, finetune: bool = False, dropout: Probability = 0.1) -> nn.Module:
    """Pretrained Transformer encoder (Hugging Face folder or hub name), mean-pooled, + linear head.

    ``finetune: false`` trains the head on cached encoder features; ``true`` trains it all.
    """
    tokenizer = spec.extra.get("tokenizer", {})
    if not kind_of(spec).token_ids or tokenizer.get("type") != "pretrained":
        raise ConfigError(
            "model 'pretrained_text' takes text tokenised by its encoder: set data.text.tokenizer: pretrained "
            f"and data.text.encoder: {encoder} (a config naming this model does so)"
        )
    if tokenizer.get("source") != encoder:
        raise ConfigError(
            f"model.encoder '{encoder}' differs from the data's tokeniser '{tokenizer.get('source')}': use one encoder"
        )
    model = load_pretrained("model", encoder, "model.encoder")
    hidden = getattr(model.config, "hidden_size", None)
    if not isinstance(hidden, int):
        raise ConfigError(f"model.encoder '{encoder}': not a Transformer encoder with a hidden_size")
    if getattr(model, "pooler", None) is not None:
        # BERT's pooler (dense + tanh on [CLS], trained for next-sentence prediction) is unused
        # by mean pooling: dropped, so it is neither saved nor left without gradients
        model.pooler = None
    return PretrainedTextClassifier(model, hidden, spec.output_size, finetune, dropout)
