"""The report section of a language-model run: the corpus and its vocabulary, loss and
perplexity as training went, throughput in tokens (training, and the samples' generation), and
text sampled at a few temperatures."""

from __future__ import annotations

import html
import math
import time
from typing import Any

from torchkeel.evaluate import charts
from torchkeel.evaluate.report_parts import Figure, ReportContext, Section
from torchkeel.evaluate.sections import key_values

TEMPERATURES = (0.5, 0.8, 1.0)
SAMPLE_TOKENS = 200
VOCAB_SHOWN = 100


def language_model_section(ctx: ReportContext) -> Section:
    extra = ctx.spec.extra
    corpus = extra.get("corpus", {})
    facts = {
        "tokeniser": extra["tokenizer"].get("type", "?"),
        "vocabulary (tokens)": extra["vocab_size"],
        "characters per held-out token": extra.get("chars_per_token", float("nan")),
        "context (block size, tokens)": extra["block_size"],
        "training tokens": corpus.get("train_tokens", "?"),
        "held-out tokens": corpus.get("val_tokens", "?"),
        "held out": corpus.get("held_out", "?"),
        "held-out windows evaluated": corpus.get("eval_windows", "?"),
        "training throughput (tokens/s)": ctx.summary.get("tokens_per_second", float("nan")),
    }
    samples, speed = _samples(ctx)
    facts["generation (tokens/s: the samples below, KV cache, one sequence)"] = speed
    body = key_values(facts) + _vocabulary(ctx) + samples
    return Section("language_model", "Language model", body, [_curves(ctx)])


def _vocabulary(ctx: ReportContext) -> str:
    from torchkeel.generation import load_tokenizer

    tokenizer = load_tokenizer(ctx.spec)
    shown = [tokenizer.decode([i]) for i in range(min(tokenizer.vocab_size, VOCAB_SHOWN))]
    more = f" ... ({tokenizer.vocab_size:,} in all)" if tokenizer.vocab_size > VOCAB_SHOWN else ""
    return f"<h3>Vocabulary</h3><p><code>{html.escape(' '.join(repr(t) for t in shown))}{more}</code></p>"


def _samples(ctx: ReportContext) -> tuple[str, float]:
    """Text generated from the start token at each temperature (seeded: the same every time),
    and the new tokens per second of wall time it took."""
    from torchkeel.generation import Generator, load_tokenizer

    generator = Generator(ctx.model, load_tokenizer(ctx.spec), ctx.run_dir.name)
    parts, start = [], time.perf_counter()
    for t in TEMPERATURES:  # no stop strings: SAMPLE_TOKENS new tokens each
        text = generator.generate("", max_tokens=SAMPLE_TOKENS, temperature=t, seed=ctx.config.seed)
        parts.append(f"<h4>temperature {t}</h4><pre>{html.escape(text)}</pre>")
    speed = len(TEMPERATURES) * SAMPLE_TOKENS / (time.perf_counter() - start)
    return f"<h3>Samples ({SAMPLE_TOKENS} tokens each, seed {ctx.config.seed})</h3>" + "".join(parts), speed


def _curves(ctx: ReportContext) -> Figure:
    """Loss and perplexity: every logged training batch, and val at each epoch's end."""
    steps = ctx.steps
    epochs = [r for r in ctx.epochs if "val/loss" in r]
    panels: dict[str, dict[str, Any]] = {"loss (nats per token)": {}, "perplexity": {}}
    series = {
        "train (batch)": ([r["step"] for r in steps], [r["train/batch_loss"] for r in steps]),
        "val": ([r["step"] for r in epochs], [r["val/loss"] for r in epochs]),
    }
    for name, (xs, ys) in series.items():
        if xs:
            panels["loss (nats per token)"][name] = (xs, ys)
            panels["perplexity"][name] = (xs, [math.exp(min(y, 50.0)) for y in ys])
    png = charts.line_panels(panels, "step", log_y=["perplexity"])
    return Figure(png, "loss and perplexity by optimiser step (metrics.jsonl)")
