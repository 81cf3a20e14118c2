"""Export of a translation run: the encoder and one decoder step, two ONNX graphs.

A translator is not one function of one input: decoding loops over output tokens, choosing
each from the previous ones (greedy or beam search, generation/seq2seq.py). What is exported is
the two functions that loop calls:

- ``encoder.onnx``: ``source`` (batch, length) int64 ids -> ``memory`` (batch, length, width)
  and ``source_mask`` (batch, length) bool (true at real tokens);
- ``decoder_step.onnx``: ``memory``, ``source_mask`` and ``tokens`` (batch, steps) int64 (BOS
  first, then the output so far) -> ``logits`` (batch, target vocabulary) of the next token.

The step recomputes the whole prefix (and the source keys and values) at every call: a
KV-cache step would take and return every layer's keys and values, whose length grows by one
each call; that graph is not exported yet. The loop itself (argmax or beam search, EOS = 3,
at most 1.5 x source tokens + 10) is left to the caller, as preprocess.json says.

Verification: the test split's first sentences are translated greedily twice, with PyTorch and
with the two graphs in onnxruntime; every token must agree, and the first step's logits within
the export tolerance times their scale.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchkeel.errors import ExportError
from torchkeel.generation.seq2seq import BOS, EOS, Decoding, output_limits, translate
from torchkeel.models.layers import whole_inputs

SENTENCES = 32  # test sentences translated by both


class Encoder(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        memory = self.model.encode(source)
        return memory.states, memory.mask


class DecoderStep(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, memory: torch.Tensor, source_mask: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        from torchkeel.models.seq2seq import Memory

        state = self.model.start(Memory(memory, source_mask), cache=False)
        state.tokens = tokens
        return self.model.next_logits(state)


def _onnx(module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str], dims: tuple) -> None:
    with warnings.catch_warnings(), whole_inputs():
        warnings.simplefilter("ignore", category=FutureWarning)
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=UserWarning)  # the exporter's notes on merged axis names
        torch.onnx.export(
            module, args, str(path), dynamo=True, verbose=False, input_names=inputs, output_names=outputs,
            dynamic_shapes=dims, external_data=False,
        )  # fmt: skip


def save_graphs(model: nn.Module, example: torch.Tensor, folder: Path) -> dict[str, Path]:
    """encoder.onnx and decoder_step.onnx in ``folder``, batch and lengths dynamic."""
    batch, length, steps = torch.export.Dim("batch"), torch.export.Dim("length"), torch.export.Dim("steps")
    encoder, step = Encoder(model).eval(), DecoderStep(model).eval()
    with torch.inference_mode(), whole_inputs():
        states, mask = encoder(example)
    tokens = torch.full((len(example), 3), BOS, dtype=torch.long)
    files = {"encoder": folder / "encoder.onnx", "decoder_step": folder / "decoder_step.onnx"}
    _onnx(encoder, (example,), files["encoder"], ["source"], ["memory", "source_mask"], ({0: batch, 1: length},))
    step_dims = ({0: batch, 1: length}, {0: batch, 1: length}, {0: batch, 1: steps})
    args = (states.clone(), mask.clone(), tokens)
    _onnx(step, args, files["decoder_step"], ["memory", "source_mask", "tokens"], ["logits"], step_dims)
    return files


class OnnxTranslator:
    """Greedy decoding with the two graphs in onnxruntime: the loop a deployment writes."""

    def __init__(self, files: dict[str, Path]):
        import onnxruntime

        options = {"providers": ["CPUExecutionProvider"]}
        self.encoder = onnxruntime.InferenceSession(str(files["encoder"]), **options)
        self.step = onnxruntime.InferenceSession(str(files["decoder_step"]), **options)

    def first_logits(self, source: torch.Tensor) -> torch.Tensor:
        memory, mask = self.encoder.run(None, {"source": source.numpy()})
        tokens = torch.full((len(source), 1), BOS, dtype=torch.long).numpy()
        (logits,) = self.step.run(None, {"memory": memory, "source_mask": mask, "tokens": tokens})
        return torch.from_numpy(logits)

    def greedy(self, source: torch.Tensor, limits: torch.Tensor) -> list[list[int]]:
        memory, mask = self.encoder.run(None, {"source": source.numpy()})
        tokens = torch.full((len(source), 1), BOS, dtype=torch.long)
        done = torch.zeros(len(source), dtype=torch.bool)
        for t in range(int(limits.max())):
            feed = {"memory": memory, "source_mask": mask, "tokens": tokens.numpy()}
            best = torch.from_numpy(self.step.run(None, feed)[0]).argmax(-1)
            best = torch.where(t + 1 >= limits, EOS, best)
            best = torch.where(done, 0, best)
            tokens = torch.cat([tokens, best[:, None]], 1)
            done |= best == EOS
            if bool(done.all()):
                break
        return [_before_eos(row) for row in tokens[:, 1:].tolist()]


def _before_eos(row: list[int]) -> list[int]:
    return row[: row.index(EOS)] if EOS in row else row


@torch.inference_mode()
def verify_graphs(model: nn.Module, files: dict[str, Path], x: torch.Tensor, tolerance: float) -> dict[str, Any]:
    """Greedy translations of ``x`` by PyTorch and by the graphs: the same tokens, or ExportError."""
    source = x[:SENTENCES]
    source = source[:, : max(1, int((source != 0).sum(1).max()))]
    runner = OnnxTranslator(files)
    decoding = Decoding(beam=1)
    with whole_inputs():
        memory = model.encode(source)
        expected = translate(model, memory, decoding)
        state = model.start(memory, cache=False)
        first = model.next_logits(state).float()
    got_first = runner.first_logits(source)
    scale = max(1.0, float(first.abs().max()))
    diff = float((got_first - first).abs().max())
    if not diff < tolerance * scale:
        raise ExportError(
            f"the exported decoder step differs from PyTorch by {diff:.2e} (limit {tolerance * scale:.1e})"
        )
    got = runner.greedy(source, output_limits(memory, decoding))
    wanted = [[t for t in row if t] for row in expected.tolist()]
    wrong = [i for i, (a, b) in enumerate(zip(wanted, got, strict=True)) if a != [t for t in b if t]]
    if wrong:
        raise ExportError(
            f"greedy decoding with the exported graphs differs from PyTorch on {len(wrong)} of {len(source)} "
            f"test sentences (the first: sentence {wrong[0] + 1}); nothing was written"
        )
    return {"sentences": len(source), "max_abs_diff": diff, "output_scale": scale, "samples": (source, expected)}
