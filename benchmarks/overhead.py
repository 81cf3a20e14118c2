"""torchkeel's overhead over a hand-written PyTorch loop on the default job (issue: foundation).

Runs, interleaved, ROUNDS times each:
  keel      `keel train` (the default recipe: digits + simple_cnn, 12 epochs), whole process
  sliced    benchmarks/plain_digits.py --loader sliced      (hand-optimised plain loop)
  textbook  benchmarks/plain_digits.py --loader dataloader  (TensorDataset + DataLoader)
and prints, per variant, the median (min-max) of the training-loop time and of the whole
process wall time, the test accuracy, and the ratio of each plain loop's training time to
torchkeel's (> 1: torchkeel is faster). Usage: python benchmarks/overhead.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"


def run_keel(seed: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "torchkeel", "train", "-q", "--seed", str(seed), "--out-dir", tmp],
            check=True,
            capture_output=True,
            env=_env(),
        )
        wall = time.perf_counter() - t0
        summary = json.loads(next(Path(tmp).glob("*/summary.json")).read_text())
    return {"train": summary["train_seconds"], "wall": wall, "accuracy": summary["test"]["accuracy"]}


def run_plain(loader: str, seed: int) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(HERE / "plain_digits.py"), "--loader", loader, "--seed", str(seed)],
        check=True,
        capture_output=True,
        text=True,
        env=_env(),
    )
    wall = time.perf_counter() - t0
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"train": result["train_seconds"], "wall": wall, "accuracy": result["test_accuracy"]}


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(SRC)}


def _stat(values: list[float]) -> str:
    return f"{statistics.median(values):6.2f} ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    variants = {
        "torchkeel (keel train)": lambda s: run_keel(s),
        "plain, sliced tensors": lambda s: run_plain("sliced", s),
        "plain, textbook DataLoader": lambda s: run_plain("dataloader", s),
    }
    results: dict[str, list[dict]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(args.rounds):  # interleaved, order rotated: noise hits every variant alike
        for name in names[r % len(names) :] + names[: r % len(names)]:
            results[name].append(variants[name](r))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)

    import torch

    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"python {platform.python_version()}, {args.rounds} interleaved rounds, seeds 0-{args.rounds - 1}"
    )
    ours = statistics.median(x["train"] for x in results["torchkeel (keel train)"])
    print("| variant | train s, median (min-max) | process s, median (min-max) | test acc | train s / torchkeel's |")
    print("|---|---|---|---|---|")
    for name, rows in results.items():
        train = [x["train"] for x in rows]
        ratio = statistics.median(train) / ours
        print(
            f"| {name} | {_stat(train)} | {_stat([x['wall'] for x in rows])} | "
            f"{statistics.mean(x['accuracy'] for x in rows):.4f} | {ratio:.3f} |"
        )


if __name__ == "__main__":
    main()
