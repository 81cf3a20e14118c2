"""What writing report.html adds to `keel train` (issue: evaluate and tune).

Runs the default `keel train` (digits + simple_cnn, 12 epochs) with `eval.report` on and off,
interleaved, ROUNDS times each, and prints the medians of the whole process's CPU time (user +
system) and wall time, and the difference and ratio of the CPU medians. Each process runs on one
thread (OMP_NUM_THREADS=1, train.threads=1): on a shared machine, multi-threaded torch spends
CPU time spinning while it waits for its other thread, which makes CPU time as noisy as wall
time; single-threaded, CPU time measures the work. Usage: python benchmarks/report_cost.py
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def keel_train(report: bool) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one `keel train` process."""
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        cpu0, t0 = _children_cpu(), time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "torchkeel", "train", "-q", "--out-dir", tmp]
            + ["--set", f"eval.report={report}", "--set", "train.threads=1"],
            check=True,
            capture_output=True,
            env=env,
        )
        wall, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
        assert any(Path(tmp).glob("*/report.html")) == report
    return cpu, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    cpu: dict[bool, list[float]] = {True: [], False: []}
    wall: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(args.rounds):
        for report in (False, True):
            c, w = keel_train(report)
            cpu[report].append(c)
            wall[report].append(w)
    import torch

    print(f"python {platform.python_version()}, torch {torch.__version__}, {platform.machine()}, rounds {args.rounds}")
    for report in (False, True):
        label = "with report.html" if report else "eval.report=false"
        c, w = cpu[report], wall[report]
        print(
            f"{label:18s} CPU median {statistics.median(c):6.2f} s (min-max {min(c):.2f}-{max(c):.2f})  "
            f"wall median {statistics.median(w):6.2f} s (min-max {min(w):.2f}-{max(w):.2f})"
        )
    extra = statistics.median(cpu[True]) - statistics.median(cpu[False])
    ratio = statistics.median(cpu[True]) / statistics.median(cpu[False])
    print(f"report.html adds {extra:.2f} CPU s; CPU ratio with/without {ratio:.2f}")


if __name__ == "__main__":
    main()
