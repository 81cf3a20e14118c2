"""How long `keel --help` takes, against the bare interpreter (issue: performance, < 0.5 s).

Runs, interleaved, ROUNDS times each: `python -c pass`, `python -c "import torch"` and
`python -m torchkeel --help` (and `python -c "import torch"` with the exit-time garbage
collection skipped, as keel's own exit does); prints wall and CPU (user + system, from wait4) seconds, median
(min-max). On a busy shared machine the wall time includes waiting for a core; the CPU time
is what the command itself costs. Also checks that `--help` does not import torch.
Usage: python benchmarks/cli_startup.py [--rounds 10]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
    # what keel's exit does (cli._leave_objects_to_the_os): the exit-time collections skipped
    "python -c 'import torch', gc.freeze at exit": [
        sys.executable,
        "-c",
        "import atexit, gc, torch; atexit.register(lambda: (gc.disable(), gc.freeze()))",
    ],
    "keel --help": [sys.executable, "-m", "torchkeel", "--help"],
    "keel train --help": [sys.executable, "-m", "torchkeel", "train", "--help"],
}


def timed(cmd: list[str]) -> tuple[float, float]:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed")
    return time.perf_counter() - t0, usage.ru_utime + usage.ru_stime


def imports_torch() -> bool:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "torchkeel", "--help"], capture_output=True, text=True, env=env
    )
    return any(line.rstrip().endswith("| torch") for line in out.stderr.splitlines())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in COMMANDS}
    for _ in range(args.rounds):
        for name, cmd in COMMANDS.items():
            results[name].append(timed(cmd))
    print(f"# {platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}, {args.rounds} rounds")
    print("| command | wall s, median (min-max) | CPU s, median (min-max) |")
    print("|---|---|---|")
    for name, rows in results.items():
        wall, cpu = [r[0] for r in rows], [r[1] for r in rows]
        print(
            f"| {name} | {statistics.median(wall):.2f} ({min(wall):.2f}-{max(wall):.2f}) | "
            f"{statistics.median(cpu):.2f} ({min(cpu):.2f}-{max(cpu):.2f}) |"
        )
    print(f"\n`keel --help` imports torch: {'yes' if imports_torch() else 'no'}")


if __name__ == "__main__":
    main()
