"""Sequence to sequence (translation): a target sentence per source sentence.

x is (B, S) source ids, y (B, T) target ids: BOS, the sentence, EOS, then 0 (padding), as
data/pairs.py makes them. Training is teacher forcing: the model reads y without its last
token and predicts y without its first, and the loss is cross-entropy (label-smoothed by
``train.label_smoothing``) averaged over the real target tokens, padding left out.

Evaluation decodes each source (greedy during training, for speed; the model's beam search in
eval, predict and serve) and scores the detokenised, cased output against the references with
sacreBLEU (Post 2018): corpus BLEU (13a tokenisation; ``bleu``), the same on lower-cased text
(``bleu_lowercase``, the measure tutorials that tokenise and lower-case report) and chrF
(``chrf``). Their sufficient statistics (n-gram matches and totals) are summed over batches as
tensors, so ranks all-reduce them, and the score is computed once from the sums, as sacreBLEU's
corpus score is. ``perplexity`` is exp of the mean token negative log-likelihood, without label
smoothing. The signatures (sacreBLEU's record of its settings) are in the details.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from torchkeel.tasks.base import Task
from torchkeel.tasks.meter import TrainMeter, add_loss

PAD = 0
METRICS = ("bleu", "bleu_lowercase", "chrf", "perplexity")


@dataclass
class Translated:
    """What evaluation hands the accumulator: the teacher-forced logits (B, T, V), the decoded
    translations (B, L) and the source ids (B, S), for the report's examples."""

    logits: torch.Tensor
    hypotheses: torch.Tensor
    sources: torch.Tensor


def _trim(y: torch.Tensor) -> torch.Tensor:
    return y[:, : int((y != PAD).sum(1).max())]  # the batch's longest target


def token_loss(name: str, spec: Any, label_smoothing: float = 0.0, weights: Any = None):
    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # (B, T, V) against (B, T) next tokens; padding ignored; float32 under bf16 autocast
        flat = logits.reshape(-1, logits.shape[-1]).float()
        return F.cross_entropy(flat, target.reshape(-1), ignore_index=PAD, label_smoothing=label_smoothing)

    return loss


def teacher_forced(forward, x: torch.Tensor, y: torch.Tensor, loss_fn) -> tuple[Any, torch.Tensor]:
    """Training: the logits of every next target token and their loss. With gradients off
    (evaluation), the decoded translations too, for the metrics."""
    y = _trim(y)
    logits = forward(x, y[:, :-1])
    loss = loss_fn(logits, y[:, 1:])
    if torch.is_grad_enabled():
        return logits, loss
    return Translated(logits, forward(x), x), loss


@contextlib.contextmanager
def greedy_validation(model: Any):
    """Validation during training decodes greedily: beam search costs several times as much
    and ranks epochs the same way."""
    decoding = getattr(model, "decoding", None)
    if decoding is None:
        yield
        return
    model.decoding = dataclasses.replace(decoding, beam=1)
    try:
        yield
    finally:
        model.decoding = decoding


@functools.lru_cache(maxsize=8)
def _tokenizer(serialized: str) -> Any:
    """A ``tokenizers`` model from its JSON, built once per process (a server decodes every batch)."""
    from tokenizers import Tokenizer

    return Tokenizer.from_str(serialized)


class Detokenizer:
    """Token ids -> detokenised text, through the run's own ``tokenizers`` model (target or source side)."""

    def __init__(self, spec: Any, side: str = "target_tokenizer"):
        self.tokenizer = _tokenizer(json.dumps(spec.extra[side]["tokenizer"]))

    def __call__(self, ids: torch.Tensor) -> list[str]:
        rows = [[i for i in row if i > 3] for row in ids.tolist()]  # pad, unk, BOS, EOS are not text
        return [t.strip() for t in self.tokenizer.decode_batch(rows, skip_special_tokens=True)]


def bleu_metrics() -> dict[str, Any]:
    from sacrebleu.metrics import BLEU, CHRF

    metrics = {"bleu": BLEU(), "bleu_lowercase": BLEU(lowercase=True), "chrf": CHRF()}
    for m in metrics.values():
        m.num_refs = 1  # what corpus_score would record; the signature needs it
    return metrics


class TranslationScores:
    def __init__(self, spec: Any, names: list[str], device: torch.device, top_k: int = 3, *, details: bool = False):
        from torchkeel.extras import require

        require("translate", "sacrebleu")
        self.text, self.scorers = Detokenizer(spec), bleu_metrics()
        self.source_text = Detokenizer(spec, "tokenizer") if details else None
        self.names = [n for n in names if n in METRICS]
        self.sums = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum, sentences
        self.nll = torch.zeros(2, dtype=torch.float64, device=device)  # token NLL sum, tokens
        # one row of sufficient statistics per metric, as wide as its scorer makes them
        # (one tensor, so ranks all-reduce it: vars(self)'s tensors are what train.distributed sums)
        widths = [len(m._extract_corpus_statistics(["a"], [["a"]])[0]) for m in self.scorers.values()]
        ends = torch.tensor(widths).cumsum(0).tolist()
        self.columns = {k: slice(end - w, end) for k, w, end in zip(self.scorers, widths, ends, strict=True)}
        self.stats = torch.zeros(ends[-1], dtype=torch.float64, device=device)
        self.has_loss = False
        self.examples: list[tuple[str, str, str]] = []

    @torch.no_grad()
    def update(self, out: Translated, y: torch.Tensor, loss: torch.Tensor | None = None) -> None:
        self.has_loss |= add_loss(self.sums, loss, len(y))
        y = _trim(y)
        target = y[:, 1:]
        flat = out.logits.reshape(-1, out.logits.shape[-1]).float()
        self.nll[0] += F.cross_entropy(flat, target.reshape(-1), ignore_index=PAD, reduction="sum").double()
        self.nll[1] += (target != PAD).sum()
        hyps, refs = self.text(out.hypotheses), self.text(y)
        for key, scorer in self.scorers.items():
            stats = scorer._extract_corpus_statistics(hyps, [refs])  # per sentence; summed like corpus_score
            self.stats[self.columns[key]] += torch.tensor(stats, dtype=torch.float64).sum(0).to(self.stats.device)
        if self.source_text is not None:
            self.examples += list(zip(self.source_text(out.sources), refs, hyps, strict=True))

    def compute(self) -> dict[str, float]:
        loss_sum, n = self.sums.tolist()
        nll, tokens = self.nll.tolist()
        values = {"perplexity": math.exp(min(nll / max(tokens, 1), 700.0))}
        for key, scorer in self.scorers.items():
            stats = [int(round(v)) for v in self.stats[self.columns[key]].tolist()]
            values[key] = float(scorer._compute_score_from_stats(stats).score) if stats[0] or key == "chrf" else 0.0
        return ({"loss": loss_sum / max(n, 1)} if self.has_loss else {}) | {k: values[k] for k in self.names}

    def details(self) -> dict[str, Any]:
        signatures = {k: s.get_signature().format() for k, s in self.scorers.items()}
        rows = [{"source": s, "reference": r, "hypothesis": h} for s, r, h in self.examples]
        return {"signatures": signatures, "translations": rows}


def decode(out: torch.Tensor, spec: Any, k: int) -> list[dict[str, Any]]:
    return [{"translation": t} for t in Detokenizer(spec)(out)]


TRANSLATION = Task(
    name="translation",
    description="sequence to sequence (translation)",
    losses=("cross_entropy",),
    metrics=METRICS,
    key_metric="bleu",
    lower_is_better=frozenset({"loss", "perplexity"}),
    uses=frozenset({"predict", "eval", "serve", "export"}),
    output_size=lambda spec: int(spec.extra["target_vocab_size"]),
    build_loss=token_loss,
    accumulator=TranslationScores,
    train_meter=lambda spec, device: TrainMeter(device, None),
    decode=decode,
    forward_loss=teacher_forced,
    eval_forward_loss=teacher_forced,
    validation=greedy_validation,
    report_sections=("translations",),
    export_output="encoder.onnx: source ids -> memory, source_mask; decoder_step.onnx: memory, source_mask, "
    "tokens so far -> next-token logits (batch, target vocabulary)",
    export_as="encoder_decoder",
    notes=lambda: {f"{k} signature": m.get_signature().format() for k, m in bleu_metrics().items()},
)
