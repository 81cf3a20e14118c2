"""What an exported language model is checked on besides the run's held-out windows: real
prompts through the run's own tokeniser, at lengths other than the block size the export was
traced at, so a sequence length baked into the graph fails the export."""

from __future__ import annotations

from typing import Any

import torch

from torchkeel.errors import ExportError

# everyday English, a line of verse and a name, as a user's prompts would be
PROMPTS = ("ROMEO:", "To be, or not to be, that is the question:", "The quick brown fox jumps over the lazy dog.")


def prompt_inputs(spec: Any, block_size: int) -> list[torch.Tensor]:
    """Each prompt's token ids (1, T) through the run's tokeniser, cropped to the block; at
    least two different lengths."""
    from torchkeel.generation import load_tokenizer

    tokenizer = load_tokenizer(spec)
    inputs = []
    for prompt in PROMPTS:
        ids = tokenizer.encode(prompt)[-block_size:] or [0]  # characters the vocabulary lacks are left out
        inputs.append(torch.tensor([ids], dtype=torch.long))
    if len({x.shape[1] for x in inputs}) < 2:  # every prompt cropped to the same length: add a shorter one
        inputs.append(inputs[-1][:, : max(1, inputs[-1].shape[1] // 2)])
    return inputs


@torch.inference_mode()
def verify_prompts(model: torch.nn.Module, run: Any, spec: Any, tolerance: float) -> tuple[float, list[int]]:
    """Max |exported - PyTorch| of the logits over the prompts, and the lengths checked."""
    worst, lengths = 0.0, []
    for x in prompt_inputs(spec, model.block_size):
        expected, got = model(x).float(), run(x).float()
        if got.shape != expected.shape:
            raise ExportError(
                f"the export gives logits of shape {tuple(got.shape)} for a {x.shape[1]}-token prompt, "
                f"expected {tuple(expected.shape)}"
            )
        worst = max(worst, (got - expected).abs().max().item())
        lengths.append(x.shape[1])
    if not worst < tolerance:
        raise ExportError(
            f"on prompts of {', '.join(map(str, lengths))} tokens the export differs from the PyTorch model "
            f"by up to {worst:.2e} (limit {tolerance:.0e}); nothing was written"
        )
    return worst, lengths
