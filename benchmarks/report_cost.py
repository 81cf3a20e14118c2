"""What writing report.html adds to `keel train` (issue: evaluate and tune).

Runs the default `keel train` (digits + simple_cnn, 12 epochs) with `eval.report` on and off,
interleaved, ROUNDS times each, and prints the medians of the whole process's CPU time (user +
system) and wall time, and the difference and ratio of the CPU medians. Each process runs on one
thread (OMP_NUM_THREADS=1, train.threads=1): on a shared machine, multi-threaded torch spends
CPU time spinning while it waits for its other thread, which makes CPU time as noisy as wall
time; single-threaded, CPU time measures the work.

``--against SRC`` adds a third row, interleaved with the others: the report written by another
checkout's ``src`` folder (e.g. a ``git worktree`` of an earlier commit), so a change to the
report's cost is measured before and after in one run.
Usage: python benchmarks/report_cost.py [--rounds 5] [--against OTHER/src]
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


def keel_train(report: bool, src: Path = SRC) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one `keel train` process."""
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
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
    parser.add_argument("--against", type=Path, help="another checkout's src folder: its report as a third row")
    args = parser.parse_args()
    rows = {"eval.report=false": (False, SRC), "with report.html": (True, SRC)}
    if args.against:
        rows[f"report, {args.against}"] = (True, args.against.resolve())
    cpu: dict[str, list[float]] = {k: [] for k in rows}
    wall: dict[str, list[float]] = {k: [] for k in rows}
    for _ in range(args.rounds):
        for label, (report, src) in rows.items():
            c, w = keel_train(report, src)
            cpu[label].append(c)
            wall[label].append(w)
    import torch

    print(f"python {platform.python_version()}, torch {torch.__version__}, {platform.machine()}, rounds {args.rounds}")
    for label in rows:
        c, w = cpu[label], wall[label]
        print(
            f"{label:24s} CPU median {statistics.median(c):6.2f} s (min-max {min(c):.2f}-{max(c):.2f})  "
            f"wall median {statistics.median(w):6.2f} s (min-max {min(w):.2f}-{max(w):.2f})"
        )
    for label in list(rows)[1:]:
        extra = statistics.median(cpu[label]) - statistics.median(cpu["eval.report=false"])
        ratio = statistics.median(cpu[label]) / statistics.median(cpu["eval.report=false"])
        print(f"{label}: the report adds {extra:.2f} CPU s; CPU ratio with/without {ratio:.2f}")


if __name__ == "__main__":
    main()
