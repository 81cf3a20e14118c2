"""What importing each optional library costs on top of torch (issue: evaluate and tune).

Each library is imported in a fresh interpreter that has already imported torch and
torchvision (as `keel train` has by the time it evaluates), ROUNDS times, interleaved, and the
median extra seconds are printed. This is the evidence for computing metrics in-house instead
of through torchmetrics, and for importing captum, matplotlib, mlflow and optuna only inside
the functions that need them. A library that is not installed (torchmetrics is no longer a
dependency: `pip install torchmetrics` to measure it) is listed as such.
Usage: python benchmarks/import_costs.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys

MODULES = ("torchmetrics", "captum.attr", "matplotlib.figure", "torch.utils.tensorboard", "mlflow", "optuna")
PROBE = "import time, torch, torchvision; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"


def extra_seconds(module: str) -> float | None:
    """Seconds of ``import module`` after torch; None when it is not installed."""
    out = subprocess.run([sys.executable, "-c", PROBE.format(module=module)], capture_output=True, text=True)
    if out.returncode != 0:
        if "ModuleNotFoundError" in out.stderr:
            return None
        raise RuntimeError(out.stderr.strip().splitlines()[-1])
    return float(out.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    times: dict[str, list[float]] = {m: [] for m in MODULES}
    for _ in range(args.rounds):
        for module in MODULES:  # interleaved: a busy moment hits every module alike
            times[module].append(extra_seconds(module))
    import torch

    print(f"python {platform.python_version()}, torch {torch.__version__}, {platform.machine()}, rounds {args.rounds}")
    print(f"{'module':28s} {'median s':>9s} {'min-max s':>13s}")
    for module, values in times.items():
        if None in values:
            print(f"{module:28s} {'not installed':>23s}")
            continue
        print(f"{module:28s} {statistics.median(values):9.2f} {min(values):6.2f}-{max(values):.2f}")


if __name__ == "__main__":
    main()
