"""Causal language modelling: predict every next token of a window of ``block_size`` tokens.

x and y are int64 (B, T) token ids, y shifted by one; the model returns logits (B, T, vocab).
The loss is the mean cross-entropy over all B*T positions, in nats. Metrics come from two
running sums [sum of per-token losses, tokens], so a held-out part of any size is evaluated in
fixed memory and the sums all-reduce under DDP:

- perplexity = exp(loss)
- bits_per_token = loss / ln 2
- bits_per_char = bits_per_token / (characters per token of the held-out part,
  ``spec.extra["chars_per_token"]``): comparable between tokenisers.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from torchkeel.tasks.base import Task
from torchkeel.tasks.meter import TrainMeter

METRICS = ("perplexity", "bits_per_token", "bits_per_char")


def token_cross_entropy(name: str, spec: Any, label_smoothing: float = 0.0, weights: torch.Tensor | None = None):
    def loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # (B, T, V) logits against (B, T) next tokens; float32 even under bf16 autocast
        return F.cross_entropy(out.reshape(-1, out.shape[-1]).float(), y.reshape(-1), label_smoothing=label_smoothing)

    return loss


def lm_metrics(loss: float, chars_per_token: float) -> dict[str, float]:
    """Perplexity and bits from a mean loss in nats per token."""
    bits = loss / math.log(2)
    return {"perplexity": math.exp(min(loss, 700.0)), "bits_per_token": bits, "bits_per_char": bits / chars_per_token}


class LanguageModelAccumulator:
    def __init__(self, spec: Any, names: list[str], device: torch.device, top_k: int = 3, *, details: bool = False):
        self.chars_per_token = float(spec.extra.get("chars_per_token", 1.0))
        self.sums = torch.zeros(2, dtype=torch.float64, device=device)  # [loss sum over tokens, tokens]

    @torch.no_grad()
    def update(self, out: torch.Tensor, y: torch.Tensor, loss: torch.Tensor | None = None) -> None:
        if loss is None:  # the loss of the batch, as training defines it
            loss = token_cross_entropy("cross_entropy", None)(out, y)
        self.sums += torch.stack([loss.detach().double() * y.numel(), torch.tensor(float(y.numel()), device=y.device)])

    def compute(self) -> dict[str, float]:
        loss_sum, n = self.sums.tolist()
        loss = loss_sum / max(n, 1)
        return {"loss": loss} | lm_metrics(loss, self.chars_per_token)

    def details(self) -> dict[str, Any]:
        return {}


LANGUAGE_MODEL = Task(
    name="language_model",
    description="language modelling",
    losses=("cross_entropy",),
    metrics=METRICS,
    key_metric="loss",
    lower_is_better=frozenset({"loss", *METRICS}),
    uses=frozenset({"eval", "generate", "serve", "export"}),
    output_size=lambda spec: spec.extra["vocab_size"],
    build_loss=token_cross_entropy,
    accumulator=LanguageModelAccumulator,
    train_meter=lambda spec, device: TrainMeter(device, None),
    decode=None,
    server="lm",
    export_output="logits (batch, sequence, vocab_size): softmax over the last axis gives next-token probabilities",
    adjust_metrics=lambda chosen, spec: list(METRICS),  # always all: they are free given the loss
    report_sections=("language_model",),
    refusal_hint="; sample from it with `keel generate {run}`",
)
