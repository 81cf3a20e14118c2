"""How many CPU threads training uses: ``train.threads: auto`` (the default) or a number.

The rule: one thread when a training step is small, torch's default (one per core) otherwise.
Small means fewer than ``SMALL_STEP`` multiply-adds in the forward pass of one batch, counted
from the model's convolutions, linear and recurrent layers on one sample (``forward_macs``)
times the batch size.

Why: torch's intra-op threads meet at an OpenMP barrier after every op. When the ops are small
the barriers are most of the step, and when another process holds a core the thread waiting
at the barrier spins until the scheduler gives its partner a slice: on a busy 2-core machine the
default digits job (about 11 M multiply-adds per step) trained in 104 s with two threads and 7 s
with one, while on an idle one the MNIST CNN of benchmarks/speed.py (about 160 M per step) is
1.65x slower on one thread. benchmarks/threads.py measures both sides of the threshold, busy
and quiet (benchmarks/RESULTS.md, "the thread rule").

Why not a probe of the first steps at one and two threads, or the machine's load: the thread
count changes the order in which torch sums (a run on two threads drifts from the same run on
one), so a choice that depends on the load of the moment would make the same config give
different numbers from run to run. The rule depends on the model and the batch alone.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

SMALL_STEP = 25_000_000  # forward multiply-adds per batch below which one thread is used (see above)


def choose(setting: int | str | None, model: nn.Module, sample: torch.Tensor | None, batch: int) -> int | None:
    """The thread count to set: ``setting`` when it is a number; for ``auto``, 1 when a step of
    ``batch`` samples like ``sample`` (one input, on the CPU) is small, else None (torch's)."""
    if setting != "auto":
        return setting  # type: ignore[return-value]
    if sample is None or sample.device.type != "cpu":
        return None
    return 1 if forward_macs(model, sample) * batch < SMALL_STEP else None


def decode_threads(model: nn.Module) -> int | None:
    """Threads for generating text one token at a time: 1 on the CPU when a step is small by
    the rule above, else None (torch's). A one-token step multiplies by every weight once, so
    its multiply-adds are the parameter count: the baby GPT's 0.8 M. On a quiet 2-core machine
    its cached steps ran about as fast on one thread as on two (657 and 701 tokens/s, medians of
    5 alternating rounds of generation/speed.py); on a busy one the barrier above decides."""
    from torchkeel.models import count_parameters

    first = next(model.parameters(), None)
    if first is None or first.device.type != "cpu":
        return None
    return 1 if count_parameters(model) < SMALL_STEP else None


def forward_macs(model: nn.Module, sample: torch.Tensor) -> int:
    """Multiply-adds of one forward pass over ``sample`` (a batch of one) in the model's
    convolutions (kernel x output positions), linear layers (weights x positions) and
    recurrent layers (weights x time steps); elementwise ops and attention scores are left out.
    Run in eval mode without gradients, so no BatchNorm statistic or RNG state changes."""
    counts: list[int] = []
    hooks = [m.register_forward_hook(_counter(counts)) for m in model.modules() if isinstance(m, COUNTED)]
    training = model.training
    try:
        with torch.no_grad():
            model.eval()(sample)
    except Exception:  # a model that does not take one sample this way: count nothing
        return 0
    finally:
        model.train(training)
        for h in hooks:
            h.remove()
    return sum(counts)


COUNTED = (nn.modules.conv._ConvNd, nn.Linear, nn.RNNBase, nn.MultiheadAttention)


def _counter(counts: list[int]) -> Any:
    def hook(module: nn.Module, inputs: tuple, out: Any) -> None:
        out = out[0] if isinstance(out, tuple) else out
        if isinstance(module, nn.modules.conv._ConvNd):
            # a transposed conv applies its kernel at every input position, a conv at every output one
            at = inputs[0] if module.transposed else out
            counts.append(module.weight.numel() * at[0, 0].numel())
        elif isinstance(module, nn.Linear):
            counts.append(module.weight.numel() * (out.numel() // out.shape[-1]))
        elif isinstance(module, nn.RNNBase):
            steps = out.data.shape[0] if isinstance(out, PackedSequence) else out.shape[1 if module.batch_first else 0]
            weights = sum(p.numel() for name, p in module.named_parameters() if name.startswith("weight"))
            counts.append(weights * steps)
        elif module.in_proj_weight is not None:  # attention's input projection (its output one is a Linear)
            counts.append(module.in_proj_weight.numel() * (out.numel() // out.shape[-1]))

    return hook
