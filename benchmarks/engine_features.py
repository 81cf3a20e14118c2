"""Each engine feature on and off, per training step of workload (1) (the MNIST CNN, batch 128),
in one process: CPU time and wall time per step, median over interleaved repeats.

The full-process comparison is `benchmarks/speed.py --features` (each variant a whole `keel
train`); this is the quick one when the machine is too busy for that: the same model
(simple_cnn with the classic MNIST geometry), optimiser (torchkeel's build_optimizer) and
autocast (torchkeel's runtime.autocast) as `keel train` uses, on random MNIST-shaped batches.
Variants: channels_last on/off, bf16 autocast, Adam loop/foreach/fused kernels, 1 thread, and
torch.compile (its compile time reported separately, from the first step).
Usage: python benchmarks/engine_features.py [--steps 30] [--repeats 5] [--compile]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from torchkeel.config import OptimizerConfig  # noqa: E402
from torchkeel.data.bundle import DataSpec  # noqa: E402
from torchkeel.models import build  # noqa: E402
from torchkeel.train import runtime  # noqa: E402
from torchkeel.train.optim import build_optimizer  # noqa: E402

SPEC = DataSpec("mnist", "image", "classification", (1, 28, 28), classes=[str(d) for d in range(10)])
NET = {"name": "simple_cnn", "channels": [24, 32], "kernels": [5, 3], "padding": "valid", "hidden": 256}
BASE = {"channels_last": True, "precision": "fp32", "implementation": "auto", "threads": None, "compile": False}
VARIANTS = {
    "baseline (channels_last, fp32, Adam auto)": {},
    "NCHW (channels_last off)": {"channels_last": False},
    "bf16 autocast": {"precision": "bf16"},
    "Adam foreach": {"implementation": "foreach"},
    "Adam fused": {"implementation": "fused"},
    "1 thread": {"threads": 1},
}


class Trainer:
    """One variant's model, optimiser and settings; ``run(batches)`` times that many steps."""

    def __init__(self, settings: dict) -> None:
        self.s = {**BASE, **settings}
        torch.manual_seed(0)
        self.model = build(NET, SPEC)
        if self.s["channels_last"]:
            self.model = self.model.to(memory_format=torch.channels_last)
        cfg = OptimizerConfig(name="adam", lr=1e-3, weight_decay=0.0, implementation=self.s["implementation"])
        self.optimizer = build_optimizer(self.model, cfg)
        self.forward = torch.compile(self.model) if self.s["compile"] else self.model

    def run(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[float, float]:
        threads = torch.get_num_threads()
        torch.set_num_threads(self.s["threads"] or threads)
        wall, cpu = time.perf_counter(), time.process_time()
        for x, y in batches:
            with runtime.autocast(torch.device("cpu"), self.s["precision"]):
                loss = F.cross_entropy(self.forward(x), y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        result = (time.perf_counter() - wall) / len(batches), (time.process_time() - cpu) / len(batches)
        torch.set_num_threads(threads)
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compile", action="store_true", help="also torch.compile (minutes of compiling on 2 cores)")
    args = parser.parse_args()
    variants = dict(VARIANTS)
    if args.compile:
        variants["torch.compile"] = {"compile": True}
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(128, 1, 28, 28, generator=g), torch.randint(0, 10, (128,), generator=g))]
    batches = batches * args.steps
    trainers = {name: Trainer(settings) for name, settings in variants.items()}
    first = {name: t.run(batches[:1]) for name, t in trainers.items()}  # warm-up; compiles
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for r in range(args.repeats):  # interleaved, order rotated
        names = list(variants)[r % len(variants) :] + list(variants)[: r % len(variants)]
        for name in names:
            times[name].append(trainers[name].run(batches))
    cpu_caps = "AVX512-BF16" if torch.cpu._is_avx512_bf16_supported() else torch.backends.cpu.get_cpu_capability()
    print(
        f"# {platform.machine()}, {os.cpu_count()} CPUs ({cpu_caps}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; {args.steps} steps x {args.repeats} interleaved repeats"
    )
    base = statistics.median(c for _, c in times[next(iter(variants))])
    print("| variant | ms/step wall, median (min-max) | ms/step CPU, median | CPU vs baseline | first step s |")
    print("|---|---|---|---|---|")
    for name, rows in times.items():
        wall, cpu = [w * 1e3 for w, _ in rows], [c * 1e3 for _, c in rows]
        print(
            f"| {name} | {statistics.median(wall):.1f} ({min(wall):.1f}-{max(wall):.1f}) | "
            f"{statistics.median(cpu):.1f} | {statistics.median(cpu) / base / 1e3:.2f} | {first[name][0]:.2f} |"
        )


if __name__ == "__main__":
    main()
