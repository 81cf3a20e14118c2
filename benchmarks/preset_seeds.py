"""Measure a preset config over several seeds: test accuracy, training time, whole-process wall
and CPU time and peak memory of each `keel train` run (the figures in a config's header).

Usage: python benchmarks/preset_seeds.py configs/mnist_fast.yaml [--seeds 0 1 2 3 4] [--set KEY=VALUE ...]
                                        [--against-plain data]

With --against-plain ROOT, each seed also runs benchmarks/peers/sliced.py --bf16 (the issue's
plain-PyTorch script: the same network, channels_last, bf16 autocast, Adam + one-cycle, batch
128, one epoch) on the MNIST under ROOT, interleaved, and the whole-process times are compared.
The plain script gets --bf16 where the preset's `precision: auto` picks bf16 (a CPU with
AVX512-BF16 or AMX, or a GPU), and runs in fp32 elsewhere, as torchkeel then does: on an AVX2
CPU bf16 autocast is emulated and took 112 s for the epoch keel trains in 8 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from speed import run_process  # noqa: E402  (wall time, peak RSS and CPU time of one process)

PLAIN = REPO / "benchmarks" / "peers" / "sliced.py"  # with --bf16 --epochs 1: mnist_fast's plain reference


def run_keel(config: str, seed: int, sets: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as out:
        overrides = [a for s in sets for a in ("--set", s)]
        cmd = [sys.executable, "-m", "torchkeel", "train", config, "-q", "--seed", str(seed), "--out-dir", out]
        _, wall, rss, cpu = run_process([*cmd, *overrides])
        summary = json.loads(next(Path(out).glob("*/summary.json")).read_text())
    return row("torchkeel", seed, summary["test"]["accuracy"], summary["train_seconds"], wall, cpu, rss)


def run_plain(seed: int, data: str) -> dict:
    import torch

    from torchkeel.train.runtime import resolve_precision

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    bf16 = ["--bf16"] if resolve_precision("auto", device) == "bf16" else []  # the preset's precision: auto
    cmd = [sys.executable, str(PLAIN), "--workload", "mnist", "--data", data, "--epochs", "1", *bf16]
    cmd += ["--seed", str(seed)]
    stdout, wall, rss, cpu = run_process(cmd)
    result = json.loads(stdout.strip().splitlines()[-1])
    return row("plain", seed, result["test_accuracy"], result["train_seconds"], wall, cpu, rss)


def row(variant: str, seed: int, accuracy: float, train: float, wall: float, cpu: float, rss: float) -> dict:
    return {
        "variant": variant,
        "seed": seed,
        "accuracy": accuracy,
        "train_s": train,
        "wall_s": wall,
        "cpu_s": cpu,
        "peak_rss_mb": rss,
    }


def summarise(variant: str, rows: list[dict]) -> str:
    acc = [r["accuracy"] for r in rows]
    return (
        f"{variant}: accuracy mean {statistics.mean(acc):.4f} (min {min(acc):.4f}, max {max(acc):.4f}); medians: "
        + ", ".join(f"{k} {statistics.median(r[k] for r in rows):.2f}" for k in ("train_s", "wall_s", "cpu_s"))
        + f"; peak RSS {statistics.median(r['peak_rss_mb'] for r in rows):.0f} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--set", dest="sets", action="append", default=[])
    parser.add_argument(
        "--against-plain",
        metavar="MNIST_ROOT",
        help="also run peers/sliced.py per seed, interleaved",
    )
    args = parser.parse_args()
    import torch

    cpu = torch.backends.cpu.get_cpu_capability()
    print(f"# {args.config}: {platform.machine()}, {os.cpu_count()} CPUs ({cpu}), torch {torch.__version__}")
    results: dict[str, list[dict]] = {"torchkeel": []}
    if args.against_plain:
        results["plain"] = []
    for i, seed in enumerate(args.seeds):
        order = list(results)[i % len(results) :] + list(results)[: i % len(results)]  # alternate who goes first
        for variant in order:
            if variant == "torchkeel":
                r = run_keel(args.config, seed, args.sets)
            else:
                r = run_plain(seed, args.against_plain)
            results[variant].append(r)
            print(json.dumps(r), flush=True)
    for variant, rows in results.items():
        print(summarise(variant, rows))
    if args.against_plain:
        ours, theirs = (statistics.median(r["wall_s"] for r in results[v]) for v in ("torchkeel", "plain"))
        print(f"whole process, median: plain {theirs:.2f} s / torchkeel {ours:.2f} s = {theirs / ours:.2f}")


if __name__ == "__main__":
    main()
