"""Training a language model on a corpus: the fit loop learns a repeated pattern, resumes
mid-epoch bit-identically (with gradient accumulation; a bigram model and the gpt), trains a
gpt in bf16, accumulated gradients are those of the larger batch, and a run trained from a
config evaluates, lists and reports as an LM run."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest
import torch
from conftest import keel
from rich.console import Console
from torch import nn

import torchkeel as tk
from torchkeel.config import load_config
from torchkeel.train import checkpoint as ckpt
from torchkeel.train.accumulate import forward_backward

ROOT = Path(__file__).resolve().parents[1]
SHAKESPEARE = ROOT / "data" / "tinyshakespeare" / "input.txt"


class TinyLM(nn.Module):
    """Next-token logits from the current token alone (a bigram model), with dropout so that
    resuming must restore the RNG too."""

    def __init__(self, vocab: int):
        super().__init__()
        self.embed, self.drop, self.head = nn.Embedding(vocab, 16), nn.Dropout(0.1), nn.Linear(16, vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.embed(x)))  # (B, T) -> (B, T, vocab)


def corpus(tmp_path: Path, text: str, **options) -> tk.data.DataBundle:
    (tmp_path / "c.txt").write_text(text, encoding="utf-8")
    settings = {"block_size": 16, "steps_per_epoch": 8, "cache": str(tmp_path / "cache"), **options}
    return tk.data.load({"name": "text_file", "path": str(tmp_path / "c.txt"), "corpus": settings})


def test_a_tiny_model_learns_a_repeated_pattern_to_near_zero_loss(tmp_path):
    data = corpus(tmp_path, "abcd" * 2000, steps_per_epoch=50)
    torch.manual_seed(0)
    run = tk.fit(TinyLM(data.spec.extra["vocab_size"]), data, epochs=3, batch_size=16, lr=0.05,
                 schedule="constant", progress=False)  # fmt: skip
    val = run.history[-1]
    assert val["val/loss"] < 0.05 and val["val/loss"] < run.history[0]["train/loss"]
    assert val["val/perplexity"] == pytest.approx(math.exp(val["val/loss"]))
    assert val["val/bits_per_char"] == pytest.approx(val["val/loss"] / math.log(2))  # one character per token


def test_the_test_split_is_the_last_validation_until_the_weights_change(tmp_path):
    """A corpus's held-out part is both val and test: the test numbers are the last epoch's
    val numbers, not a second pass; a weight changed in place since is evaluated again."""
    data = corpus(tmp_path, "abcab" * 400)
    assert data.test is data.val
    torch.manual_seed(0)
    run = tk.fit(TinyLM(data.spec.extra["vocab_size"]), data, epochs=1, batch_size=8, optimizer="adamw",
                 implementation="fused", progress=False)  # fmt: skip
    last_val = {k.removeprefix("val/"): v for k, v in run.history[-1].items() if k.startswith("val/")}
    assert run.evaluate("test") == last_val
    with torch.no_grad():
        run.model.head.bias[:1].add_(3.0)  # one token made likelier: a different loss
    again = run.evaluate("test")
    assert again["loss"] != last_val["loss"]
    assert again == run.evaluate("val")  # a val pass, computed afresh


def _without_seconds(history):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


def _tiny_gpt(data: tk.data.DataBundle) -> nn.Module:
    """The gpt model at its smallest, with dropout (resuming must restore the RNG)."""
    return tk.models.build({"name": "gpt", "n_layer": 1, "n_head": 2, "n_embd": 16, "dropout": 0.1}, data.spec)


@pytest.mark.parametrize("model", ["bigram", "gpt"])
def test_resume_mid_epoch_with_accumulation_is_bit_identical(tmp_path, model):
    data = corpus(tmp_path, "".join(chr(97 + (i * 7) % 26) for i in range(4000)))
    make = (lambda: TinyLM(26)) if model == "bigram" else (lambda: _tiny_gpt(data))
    often = {"every_steps": 3, "min_seconds": 3600, "keep": 100}
    options = {"epochs": 2, "batch_size": 4, "accumulate": 2, "seed": 1, "checkpoint": often, "progress": False}
    torch.manual_seed(0)
    full = tk.fit(make(), data, run_dir=tmp_path / "run", threads=1, **options)
    assert full.history[0]["step"] == 4  # 8 batches of windows per epoch, 2 per optimiser step
    mid = [p for p in ckpt.list_checkpoints(tmp_path / "run" / "checkpoint") if ckpt.read_checkpoint(p).state["batch"]]
    assert mid
    for path in (mid[0], mid[-1]):
        torch.manual_seed(99)
        resumed = tk.fit(make(), data, resume=path, threads=1, **options)
        assert _without_seconds(resumed.history) == _without_seconds(full.history)
        for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
            assert torch.equal(a, b), k


def test_a_gpt_trains_in_bf16_under_autocast(tmp_path):
    """train.precision bf16 (what ``auto`` picks on GPUs and CPUs with native bf16): the blocks
    compute in bf16 and the loss still falls on a pattern."""
    data = corpus(tmp_path, "abcd" * 2000, steps_per_epoch=30)
    torch.manual_seed(0)
    model = tk.models.build({"name": "gpt", "n_layer": 1, "n_head": 2, "n_embd": 32, "dropout": 0.0}, data.spec)
    seen = set()
    model.blocks[0].attn.register_forward_hook(lambda module, args, out: seen.add(out.dtype))
    run = tk.fit(model, data, epochs=2, batch_size=8, lr=1e-2, precision="bf16", threads=1, progress=False)
    assert torch.bfloat16 in seen
    assert run.history[-1]["val/loss"] < 0.1  # from ln(4) = 1.39 at the start: the pattern is learnt
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast: the weights stay fp32


def test_accumulated_micro_batches_give_the_gradient_of_the_whole_batch():
    torch.manual_seed(0)
    model = TinyLM(7).eval()  # no dropout: the two ways must see the same function
    loss_fn = tk.tasks.TASKS["language_model"].build_loss("cross_entropy", None)
    x, y = torch.randint(0, 7, (8, 5)), torch.randint(0, 7, (8, 5))
    scaler = torch.amp.GradScaler("cpu", enabled=False)

    def grads(micro):
        model.zero_grad()
        done, loss = forward_backward(micro, model, tk.tasks.base.model_forward_loss, loss_fn, None, scaler,
                                      torch.device("cpu"), "fp32")  # fmt: skip
        return [p.grad.clone() for p in model.parameters()], loss, len(done)

    whole, loss, n = grads([(x, y)])
    parts, mean_loss, m = grads([(x[:4], y[:4]), (x[4:], y[4:])])
    assert (n, m) == (1, 2) and torch.allclose(loss, mean_loss)
    reference = torch.autograd.grad(loss_fn(model(x), y), list(model.parameters()))  # torch, directly
    for a, b, r in zip(whole, parts, reference, strict=True):
        assert torch.allclose(a, r) and torch.allclose(b, r, atol=1e-6)


def _tiny_config(tmp_path: Path) -> list[str]:
    text = "".join(f"line {i % 17} of the play, said {'ROMEO' if i % 3 else 'JULIET'}.\n" for i in range(400))
    (tmp_path / "play.txt").write_text(text, encoding="utf-8")
    return [
        f"data.path={tmp_path / 'play.txt'}",
        f"out_dir={tmp_path / 'runs'}",
        "train.epochs=2",
        "data.corpus.steps_per_epoch=6",
        "data.corpus.eval_windows=20",
        "model.n_layer=1",
        "model.n_embd=32",
        "train.threads=1",
    ]


def test_the_preset_trains_a_gpt_that_evaluates_and_reports_as_a_language_model(tmp_path):
    from torchkeel.experiment import evaluate_run, train

    cfg = load_config(ROOT / "configs" / "shakespeare-char.yaml", _tiny_config(tmp_path))
    out = io.StringIO()
    run_dir = train(cfg, Console(file=out, width=200), progress=False)
    said = out.getvalue()
    assert "both the val and the test split" in said and "vocabulary" in said
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["key_metric"] == "loss" and summary["tokens_per_second"] > 0
    assert set(summary["test"]) == {"loss", "perplexity", "bits_per_token", "bits_per_char"}
    again = evaluate_run(run_dir)  # keel eval: the held-out part rebuilt from the cache, same windows
    assert again["loss"] == pytest.approx(summary["test"]["loss"], rel=1e-5)
    page = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "Language model" in page and "temperature 0.8" in page and "Vocabulary" in page
    assert "training throughput (tokens/s)" in page and "generation (tokens/s" in page
    assert "<svg" in page and "perplexity" in page  # the curves, drawn
    assert "could not be drawn" not in page
    assert len(list((tmp_path / "runs" / ".corpus").iterdir())) == 1  # encoded once, beside the runs


@pytest.mark.slow
def test_keel_train_eval_and_runs_on_a_text_file(tmp_path):
    keel("train", "configs/shakespeare-char.yaml", *[a for s in _tiny_config(tmp_path) for a in ("--set", s)],
         "-q", cwd=ROOT, check=True)  # fmt: skip
    run = (tmp_path / "runs" / "latest").resolve()
    shown = keel("eval", str(run), cwd=tmp_path, check=True).stdout
    assert "perplexity" in shown and "bits_per_char" in shown
    listed = keel("runs", "--out-dir", str(tmp_path / "runs"), cwd=tmp_path, check=True).stdout
    assert "loss" in listed and "gpt" in listed


@pytest.mark.realdata
@pytest.mark.slow
def test_the_shakespeare_preset_lowers_the_loss_in_200_steps(tmp_path):
    if not SHAKESPEARE.is_file():
        pytest.skip("data/tinyshakespeare/input.txt is not there")
    from torchkeel.experiment import train

    overrides = [f"data.path={SHAKESPEARE}", f"out_dir={tmp_path}", "train.epochs=1",
                 "data.corpus.steps_per_epoch=200", "data.corpus.eval_windows=200", "eval.report=false"]  # fmt: skip
    run_dir = train(load_config(ROOT / "configs" / "shakespeare-char.yaml", overrides), Console(file=io.StringIO()))
    loss = json.loads((run_dir / "summary.json").read_text())["test"]["loss"]
    assert loss < 2.6  # from ln(65) = 4.17 at the start


def test_keel_runs_names_a_language_models_metrics(tmp_path):
    from torchkeel.cli_inspect import _run_row
    from torchkeel.runs import RunInfo

    summary = {"key_metric": "loss", "test": {"loss": 1.87, "perplexity": 6.49, "bits_per_char": 2.698}, "epochs": 4}
    row = _run_row(RunInfo(tmp_path, "done", {"data": {"name": "text_file"}, "model": {"name": "gpt"}}, summary))
    assert row[4] == "loss 1.8700, bits_per_char 2.6980"  # per character: comparable across tokenisers
