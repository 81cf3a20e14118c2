"""Measure a preset config over several seeds: test accuracy, training time, whole-process wall
and CPU time and peak memory of each `keel train` run (the figures in a config's header).

Usage: python benchmarks/preset_seeds.py configs/mnist_fast.yaml [--seeds 0 1 2 3 4] [--set KEY=VALUE ...]
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

REPO = Path(__file__).resolve().parents[1]


def run(config: str, seed: int, sets: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as out:
        overrides = [a for s in sets for a in ("--set", s)]
        cmd = [sys.executable, "-m", "torchkeel", "train", config, "-q", "--seed", str(seed), "--out-dir", out]
        env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
        t0 = time.perf_counter()
        proc = subprocess.Popen([*cmd, *overrides], cwd=REPO, env=env, stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"seed {seed} failed")
        summary = json.loads(next(Path(out).glob("*/summary.json")).read_text())
    return {
        "seed": seed,
        "accuracy": summary["test"]["accuracy"],
        "train_s": summary["train_seconds"],
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--set", dest="sets", action="append", default=[])
    args = parser.parse_args()
    import torch

    print(f"# {args.config}: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}")
    rows = []
    for seed in args.seeds:
        rows.append(run(args.config, seed, args.sets))
        print(json.dumps(rows[-1]), flush=True)
    acc = [r["accuracy"] for r in rows]
    print(
        f"accuracy mean {statistics.mean(acc):.4f} (min {min(acc):.4f}, max {max(acc):.4f}); medians: "
        + ", ".join(f"{k} {statistics.median(r[k] for r in rows):.2f}" for k in ("train_s", "wall_s", "cpu_s"))
        + f"; peak RSS {statistics.median(r['peak_rss_mb'] for r in rows):.0f} MB"
    )


if __name__ == "__main__":
    main()
