"""What the reliability features cost on the default job (digits + simple_cnn, 12 epochs).

Runs ``fit`` in one process, interleaved, ROUNDS times each:
  no guard     the NaN/inf guard replaced by the loop's old behaviour (loss.item() at log points):
               the ablation baseline
  default      on_nan: stop: loss + per-tensor gradient norms stacked per step, read at log points
  skip         on_nan: skip: the same row read every step (one host sync per step)
  ckpt/50      default + a checkpoint every 50 steps (~4 per epoch here)
  ckpt/10      default + a checkpoint every 10 steps
Every variant writes a run folder like `keel train` (checkpoints at epoch ends, throttled).
Prints the median (min-max) training seconds and each variant's ratio to "no guard".
Usage: python benchmarks/reliability.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torchkeel as keel  # noqa: E402
from torchkeel.train import loop  # noqa: E402
from torchkeel.train.guard import NonFiniteGuard, StepValues  # noqa: E402


class OldLogPoint:
    """The loop before the guard: nothing per step, ``loss.item()`` at each log point."""

    def __init__(self, *args, **kwargs):
        self.last = None

    def watch(self, step, loss, grad_norm=None) -> bool:
        self.last = (step, loss)
        return True

    def check(self, epoch, context=None) -> StepValues | None:
        if self.last is None:
            return None
        (step, loss), self.last = self.last, None
        return StepValues(step, loss.item(), None)


def train_seconds(data, options: dict, guard: type) -> float:
    loop.NonFiniteGuard = guard
    try:
        with tempfile.TemporaryDirectory() as run_dir:
            torch.manual_seed(0)
            model = keel.models.build("simple_cnn", data.spec)
            return keel.fit(model, data, run_dir=run_dir, progress=False, **options).train_seconds
    finally:
        loop.NonFiniteGuard = NonFiniteGuard


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    data = keel.data.load("digits")
    variants = {
        "no guard (old log point)": ({}, OldLogPoint),
        "default (on_nan: stop)": ({}, NonFiniteGuard),
        "on_nan: skip": ({"on_nan": "skip"}, NonFiniteGuard),
        "checkpoint every 50 steps": ({"checkpoint": {"every_steps": 50}}, NonFiniteGuard),
        "checkpoint every 10 steps": ({"checkpoint": {"every_steps": 10}}, NonFiniteGuard),
    }
    names = list(variants)
    train_seconds(data, {"epochs": 1}, NonFiniteGuard)  # warm up allocator and kernels
    results: dict[str, list[float]] = {name: [] for name in names}
    for r in range(args.rounds):  # interleaved, order rotated: noise hits every variant alike
        for name in names[r % len(names) :] + names[: r % len(names)]:
            options, guard = variants[name]
            results[name].append(train_seconds(data, options, guard))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)

    base = statistics.median(results[names[0]])
    print(f"torch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} threads, {args.rounds} rounds")
    print("| variant | train s, median (min-max) | / no guard |")
    print("|---|---|---|")
    for name in names:
        values = results[name]
        median = statistics.median(values)
        print(f"| {name} | {median:.2f} ({min(values):.2f}-{max(values):.2f}) | {median / base:.3f} |")


if __name__ == "__main__":
    main()
