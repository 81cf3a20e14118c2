"""Segmentation with and without ImageNet pretraining: one config trained with the pretrained
EfficientNet-Lite0 encoder and from scratch (the same U-Net decoder, or the scratch U-Net), side
by side, one torch thread each, and a table of test mean IoU, pixel accuracy, mean Dice and
time; per-class IoU of each run below it.

    python benchmarks/segment_quality.py configs/camvid.yaml --out /tmp/seg

Each variant is ``keel train CONFIG`` with ``--set`` overrides, run as its own process in its own
folder (the runs stay there for ``keel report`` and ``keel predict``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

SCRATCH = ["--set", "model.pretrained=false", "--set", "model.freeze_backbone=false"]
VARIANTS = {
    "unet + EfficientNet-Lite0, ImageNet (the config's)": [],
    "unet + EfficientNet-Lite0, random init, trained": SCRATCH,
    "unet from scratch (widths 32-256)": ["--set", "model.encoder=scratch", *SCRATCH],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--out", type=Path, default=Path("segment-bench"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="KEY=VALUE for every variant")
    parser.add_argument("--only", nargs="*", help="variant names (substrings) to run")
    parser.add_argument("--parallel", type=int, default=2, help="variants trained at once, one thread each")
    args = parser.parse_args()
    chosen = {k: v for k, v in VARIANTS.items() if not args.only or any(s in k for s in args.only)}
    common = [a for kv in args.overrides for a in ("--set", kv)] + ["--set", "train.threads=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    pending, running, done = list(chosen.items()), [], {}
    while pending or running:
        while pending and len(running) < args.parallel:
            name, extra = pending.pop(0)
            folder = args.out / f"variant{list(VARIANTS).index(name)}"
            folder.mkdir(parents=True, exist_ok=True)
            cmd = [sys.executable, "-m", "torchkeel", "train", str(args.config.resolve()), *common, *extra]
            log = (folder / "train.log").open("w")
            proc = subprocess.Popen(cmd, cwd=folder, stdout=log, stderr=subprocess.STDOUT, env=env)
            running.append((name, folder, proc, time.perf_counter()))
            print(f"started {name} in {folder}", file=sys.stderr)
        time.sleep(5)
        for item in list(running):
            name, folder, proc, start = item
            if proc.poll() is not None:
                running.remove(item)
                done[name] = (folder, proc.returncode, time.perf_counter() - start)
                print(f"finished {name}: exit {proc.returncode}", file=sys.stderr)
    rows = []
    for name in chosen:
        folder, code, seconds = done[name]
        summary_file = folder / "runs" / "latest" / "summary.json"
        if code != 0 or not summary_file.is_file():
            rows.append(f"| {name} | failed (exit {code}; see {folder / 'train.log'}) | | | | |")
            continue
        summary = json.loads(summary_file.read_text())
        test = summary["test"]
        rows.append(
            f"| {name} | {test['miou']:.4f} | {test['pixel_accuracy']:.4f} | {test['mean_dice']:.4f} | "
            f"{summary['train_seconds']:.0f} s ({summary['epochs']} epochs) | {seconds:.0f} s |"
        )
    print("| variant | test mIoU | pixel accuracy | mean Dice | training | whole command |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    for name in chosen:
        evaluation = done[name][0] / "runs" / "latest" / "evaluation.json"
        if evaluation.is_file():
            per_class = json.loads(evaluation.read_text()).get("per_class", [])
            ious = ", ".join(f"{r['class']} {r['iou']:.2f}" for r in per_class if r.get("iou") is not None)
            print(f"\n{name}: {ious}")


if __name__ == "__main__":
    main()
