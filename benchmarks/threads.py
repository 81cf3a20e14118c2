"""One thread or torch's default: training steps of models on both sides of ``train.threads:
auto``'s threshold (src/torchkeel/train/threads.py), timed at 1 and 2 threads, interleaved.

    python benchmarks/threads.py [--steps 30] [--repeats 3] [--burn 2]

Each workload builds its model with torchkeel, makes random inputs of its data's shape and
times ``--steps`` steps (forward, cross-entropy, backward, AdamW) per repeat and thread count;
it prints the median ms per step (min-max), the forward multiply-adds per batch that the rule
reads and the rule's choice. ``--burn N`` starts N busy-looping processes for the duration (a
busy machine, as a shared one is) and stops them at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from torchkeel.config import load_config  # noqa: E402
from torchkeel.data.bundle import DataSpec  # noqa: E402
from torchkeel.models import build  # noqa: E402
from torchkeel.train.threads import SMALL_STEP, choose, forward_macs  # noqa: E402

CLASSIC = ["model.channels=[24,32]", "model.kernels=[5,3]", "model.padding=valid", "model.hidden=256"]
WORKLOADS = {  # name: (input shape, batch, config overrides)
    "digits simple_cnn (the default job)": ((1, 8, 8), 32, []),
    "digits lenet5": ((1, 8, 8), 32, ["model.name=lenet5"]),
    "mnist lenet5": ((1, 28, 28), 128, ["model.name=lenet5"]),
    "mnist classic CNN (speed.py workload 1)": ((1, 28, 28), 128, CLASSIC),
    "digits resnet": ((1, 8, 8), 32, ["model.name=resnet"]),
}


def time_steps(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, threads: int) -> float:
    torch.set_num_threads(threads)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - t0) / steps * 1000


def measure(name: str, steps: int, repeats: int) -> str:
    shape, batch, sets = WORKLOADS[name]
    spec = DataSpec("x", "image", "classification", shape, classes=list("0123456789"))
    model = build(load_config(None, sets, {}).model, spec)
    x, y = torch.randn(batch, *shape), torch.randint(0, 10, (batch,))
    macs = forward_macs(model, x[:1]) * batch
    choice = choose("auto", model, x[:1], batch) or "torch's (2)"
    time_steps(model, x, y, 3, 1)  # warm-up
    ms: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(repeats):
        for threads in (1, 2):
            ms[threads].append(time_steps(model, x, y, steps, threads))
    one, two = (statistics.median(ms[t]) for t in (1, 2))
    cells = [f"{statistics.median(v):.1f} ({min(v):.1f}-{max(v):.1f})" for v in ms.values()]
    return f"| {name} | {macs / 1e6:,.0f} M | {cells[0]} | {cells[1]} | {two / one:.2f} | {choice} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--burn", type=int, default=0, help="busy-looping processes beside the timing")
    parser.add_argument("--workloads", nargs="*", default=list(WORKLOADS))
    args = parser.parse_args()
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.burn)]
    try:
        print(f"# {os.cpu_count()} CPUs, torch {torch.__version__}, burners {args.burn}, load {os.getloadavg()[0]:.1f}")
        print(f"# threshold: {SMALL_STEP / 1e6:.0f} M forward multiply-adds per batch")
        print("| workload | forward MACs / batch | 1 thread ms/step | 2 threads ms/step | 2 / 1 | auto |")
        print("|---|---|---|---|---|---|")
        for name in args.workloads:
            print(measure(name, args.steps, args.repeats), flush=True)
    finally:
        for p in burners:
            p.kill()
            p.wait()


if __name__ == "__main__":
    main()
