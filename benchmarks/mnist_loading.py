"""MNIST from its raw IDX files to normalised tensors (issue: data), torchkeel vs the textbook way.

Variants, interleaved ROUNDS times in one process (imports done before timing):
  torchkeel  torchkeel.data.load({"name": "mnist", "root": ROOT}): reads the 70,000 images with
             torchvision.datasets.MNIST, splits train/val (stratified), normalises with train stats
  textbook   torchvision.datasets.MNIST with transforms ToTensor + Normalize, every sample drawn
             through a DataLoader (batch 1000) and concatenated: the usual way to get tensors
and, once each, the cost of `import torch, torchvision` and of a whole fresh process running the
torchkeel load. Prints medians (min-max) and the textbook/torchkeel ratio (> 1: torchkeel faster).

Usage: python benchmarks/mnist_loading.py [--root data] [--rounds 5] [--threads 2]
(ROOT holds MNIST/raw/ in torchvision's layout.)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
sys.path.insert(0, str(SRC))


def load_torchkeel(root: str) -> int:
    from torchkeel.data import load

    data = load({"name": "mnist", "root": root, "val_fraction": 0.1}, seed=0)
    return sum(len(s) for s in data.splits().values())


def load_textbook(root: str) -> int:
    import torch
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    total = 0
    for train in (True, False):
        loader = DataLoader(datasets.MNIST(root, train=train, transform=tf), batch_size=1000)
        xs, ys = zip(*loader, strict=True)
        x, y = torch.cat(xs), torch.cat(ys)  # (N, 1, 28, 28) float32, (N,) int64
        assert len(x) == len(y)
        total += len(x)
    return total


def fresh_process(root: str) -> float:
    """Wall seconds of `python -c 'load mnist'`: imports, reading, splitting, normalising."""
    code = f"from torchkeel.data import load; load({{'name': 'mnist', 'root': {root!r}}}, seed=0)"
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": str(SRC)})
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(HERE.parent / "data"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (the target is for 2 cores)")
    args = parser.parse_args()
    if not (Path(args.root) / "MNIST" / "raw").is_dir():
        sys.exit(f"no MNIST/raw under {args.root}: give --root")

    t0 = time.perf_counter()
    import torch
    import torchvision.datasets  # noqa: F401

    import_seconds = time.perf_counter() - t0
    torch.set_num_threads(args.threads)
    variants = {"torchkeel": load_torchkeel, "textbook": load_textbook}
    times: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(args.rounds):  # interleaved, order alternated
        for name in list(variants)[:: 1 if r % 2 == 0 else -1]:
            t0 = time.perf_counter()
            count = variants[name](args.root)
            times[name].append(time.perf_counter() - t0)
            assert count == 70_000, count
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    process = fresh_process(args.root)

    def stat(values: list[float]) -> str:
        return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"

    ratio = statistics.median(times["textbook"]) / statistics.median(times["torchkeel"])
    print(f"machine: {os.cpu_count()} CPUs, {platform.machine()}; torch {torch.__version__}, {args.threads} threads")
    print(f"torchkeel  load s {stat(times['torchkeel'])}")
    print(f"textbook   load s {stat(times['textbook'])}   ratio textbook/torchkeel {ratio:.1f}x")
    print(f"import torch + torchvision: {import_seconds:.2f} s; whole fresh process (imports + load): {process:.2f} s")
    summary = {k: statistics.median(v) for k, v in times.items()} | {"import": import_seconds, "process": process}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
