"""Cost of on-device batched augmentation per training step (issue: data), against a
`simple_cnn` training step on 32x32 colour batches (CIFAR's shape).

Each step of the benchmark times the augmentation of the batch and then the training step on it
(forward, cross-entropy, backward, AdamW step) separately, so both are measured in the same
moments of a noisy machine; the variants (crop 4, flip, affine rotate 10 / translate 0.1 /
scale 0.1, cutout 8, and all four) run interleaved, ROUNDS times STEPS steps each. Prints the
medians and the augmentation's cost as a percentage of the training step. Inputs are random
normalised tensors: the cost does not depend on the pixel values.

Usage: python benchmarks/augment_cost.py [--batch 128] [--steps 20] [--rounds 5] [--device cpu] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from torchkeel.config import AugmentConfig  # noqa: E402
from torchkeel.data.augment import build_augment  # noqa: E402
from torchkeel.data.bundle import DataSpec  # noqa: E402
from torchkeel.models import build  # noqa: E402

SPEC = DataSpec("cifar-shaped", "image", "classification", (3, 32, 32), classes=[str(i) for i in range(10)])
AUGMENTS = {
    "crop 4": AugmentConfig(crop=4, flip=False),
    "flip": AugmentConfig(flip=True),
    "affine": AugmentConfig(flip=False, rotate=10, translate=0.1, scale=0.1),
    "cutout 8": AugmentConfig(flip=False, cutout=8),
    "all four": AugmentConfig(crop=4, flip=True, rotate=10, translate=0.1, scale=0.1, cutout=8),
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(model, optimizer, x, y, augment, steps: int, device: torch.device) -> list[tuple[float, float]]:
    """(augmentation seconds, training-step seconds) for each of ``steps`` steps."""
    times = []
    for _ in range(steps):
        sync(device)
        t0 = time.perf_counter()
        batch, _ = augment(x, y)
        sync(device)
        t1 = time.perf_counter()
        loss = F.cross_entropy(model(batch), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sync(device)
        times.append((t1 - t0, time.perf_counter() - t1))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build("simple_cnn", SPEC).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(args.batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    augments = {name: build_augment(cfg, SPEC) for name, cfg in AUGMENTS.items()}
    time_steps(model, optimizer, x, y, augments["all four"], 3, device)  # warm-up
    measured: dict[str, list[tuple[float, float]]] = {k: [] for k in augments}
    for r in range(args.rounds):
        for name, augment in augments.items():
            measured[name] += time_steps(model, optimizer, x, y, augment, args.steps, device)
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)

    print(f"machine: {os.cpu_count()} CPUs, {platform.machine()}; torch {torch.__version__}; device {device}")
    steps = [t for times in measured.values() for _, t in times]
    print(f"simple_cnn training step, batch {args.batch} of 3x32x32: median {statistics.median(steps) * 1e3:.2f} ms")
    print("| augmentation | augmentation ms (median) | training step ms (median) | cost per step |")
    print("|---|---|---|---|")
    for name, times in measured.items():
        aug, step = statistics.median(a for a, _ in times), statistics.median(t for _, t in times)
        print(f"| {name} | {aug * 1e3:.3f} | {step * 1e3:.2f} | {100 * aug / step:.1f}% |")


if __name__ == "__main__":
    main()
