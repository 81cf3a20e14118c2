"""Workload (4) of benchmarks/speed.py: inference throughput of a trained MNIST run.

Variants, each in its own process, interleaved:
  plain torch      the run's network called on the test tensors, batches of 1000, inference_mode
  Predictor        torchkeel.serve.Predictor.predict_batch on the same tensors (top-3 per image)
  keel predict     the whole `keel predict RUN *.png --json` process on 1,000 PNG files
  onnx, torchscript, exported-program
                   what `keel export RUN --format F` wrote, run by its own runtime on the same
                   batches (the export happens once, before the rounds, and is not timed)
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXPORTS = ("onnx", "torchscript", "exported-program")


def run_predict(run_dir: Path, root: str, rounds: int, run_process: Callable) -> None:
    if not run_dir.is_dir():
        print("workload predict skipped: it serves the mnist workload's run (needs real MNIST)", file=sys.stderr)
        return
    with tempfile.TemporaryDirectory() as tmp:
        script = HERE / "peers" / "predict_batch.py"
        cmds = {
            "plain torch": [sys.executable, str(script), str(run_dir), "--root", root, "--mode", "plain"],
            "Predictor.predict_batch": [
                sys.executable,
                str(script),
                str(run_dir),
                "--root",
                root,
                "--mode",
                "predictor",
            ],
        }
        exports = Path(tmp) / "exports"
        for fmt in EXPORTS:  # verified against PyTorch by keel export itself
            run_process(
                [sys.executable, "-m", "torchkeel", "export", str(run_dir), "-f", fmt, "--out", str(exports / fmt)]
            )
            cmds[f"{fmt} (keel export)"] = [*cmds["plain torch"][:-1], fmt, "--exports", str(exports)]
        write = [sys.executable, str(script), str(run_dir), "--root", root, "--write-pngs", tmp]
        pngs = json.loads(run_process(write)[0])
        cmds["keel predict (1,000 PNGs)"] = [
            sys.executable,
            "-m",
            "torchkeel",
            "predict",
            str(run_dir),
            *pngs,
            "--json",
        ]
        results: dict[str, list[dict]] = {name: [] for name in cmds}
        names = list(cmds)
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                stdout, wall, rss, _ = run_process(cmds[name])
                if name.startswith("keel predict"):
                    n, seconds = len(stdout.strip().splitlines()), wall
                else:
                    got = json.loads(stdout.strip().splitlines()[-1])
                    n, seconds = got["images"], got["seconds"]
                results[name].append({"ips": n / seconds, "wall": wall, "rss": rss})
    print("\n### workload predict (inference, MNIST test set)\n")
    print("| variant | images/s, median (min-max) | process s | peak RSS MB |")
    print("|---|---|---|---|")
    for name, rows in results.items():
        ips = [x["ips"] for x in rows]
        walls = [x["wall"] for x in rows]
        print(
            f"| {name} | {statistics.median(ips):,.0f} ({min(ips):,.0f}-{max(ips):,.0f}) | "
            f"{statistics.median(walls):.2f} | {statistics.median(x['rss'] for x in rows):,.0f} |"
        )
