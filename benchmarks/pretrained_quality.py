"""Segmentation or detection with and without ImageNet pretraining: one config trained with the
pretrained EfficientNet-Lite0 backbone and from scratch, side by side, one torch thread each, and
a table of the test metrics and time; per-class scores of each run below it.

    python benchmarks/pretrained_quality.py configs/camvid.yaml --out /tmp/seg
    python benchmarks/pretrained_quality.py configs/bccd.yaml --task detection --out /tmp/det

Segmentation variants: the U-Net on the pretrained encoder, the same from random init, the
U-Net from scratch. Detection: FCOS on the pretrained Lite0 FPN (frozen, the config's), and
the same from random init with the backbone trained.

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
    "segmentation": {
        "unet + EfficientNet-Lite0, ImageNet (the config's)": [],
        "unet + EfficientNet-Lite0, random init, trained": SCRATCH,
        "unet from scratch (widths 32-256)": ["--set", "model.encoder=scratch", *SCRATCH],
    },
    "detection": {
        "fcos + EfficientNet-Lite0 FPN, ImageNet (the config's)": [],
        "fcos + EfficientNet-Lite0 FPN, random init, trained": SCRATCH,
    },
}
# per task: the test metrics shown (the first ranks), and how a per-class row reads
COLUMNS = {
    "segmentation": (("miou", "test mIoU"), ("pixel_accuracy", "pixel accuracy"), ("mean_dice", "mean Dice")),
    "detection": (
        ("map_50", "test COCO AP50"),
        ("map", "COCO mAP@[.5:.95]"),
        ("map_75", "AP75"),
        ("ap50_voc", "VOC AP50"),
    ),
}
PER_CLASS = {
    "segmentation": lambda r: f"{r['class']} {r['iou']:.2f}" if r.get("iou") is not None else "",
    "detection": lambda r: f"{r['class']} AP50 {r['ap50']:.3f} mAP {r['ap']:.3f}" if r.get("ap50") is not None else "",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--task", choices=tuple(VARIANTS), default="segmentation")
    parser.add_argument("--out", type=Path, default=Path("pretrained-bench"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="KEY=VALUE for every variant")
    parser.add_argument("--only", nargs="*", help="variant names (substrings) to run")
    parser.add_argument("--parallel", type=int, default=2, help="variants trained at once, one thread each")
    args = parser.parse_args()
    variants = VARIANTS[args.task]
    chosen = {k: v for k, v in variants.items() if not args.only or any(s in k for s in args.only)}
    common = [a for kv in args.overrides for a in ("--set", kv)] + ["--set", "train.threads=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    pending, running, done = list(chosen.items()), [], {}
    while pending or running:
        while pending and len(running) < args.parallel:
            name, extra = pending.pop(0)
            folder = args.out / f"variant{list(variants).index(name)}"
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
    columns, rows = COLUMNS[args.task], []
    for name in chosen:
        folder, code, seconds = done[name]
        summary_file = folder / "runs" / "latest" / "summary.json"
        if code != 0 or not summary_file.is_file():
            rows.append(f"| {name} | failed (exit {code}; see {folder / 'train.log'}) |" + " |" * (len(columns) + 1))
            continue
        summary = json.loads(summary_file.read_text())
        values = " | ".join(f"{summary['test'][key]:.4f}" for key, _ in columns)
        timing = f"{summary['train_seconds']:.0f} s ({summary['epochs']} epochs) | {seconds:.0f} s"
        rows.append(f"| {name} | {values} | {timing} |")
    print("| variant | " + " | ".join(label for _, label in columns) + " | training | whole command |")
    print("|---" * (len(columns) + 3) + "|")
    print("\n".join(rows))
    for name in chosen:
        evaluation = done[name][0] / "runs" / "latest" / "evaluation.json"
        if evaluation.is_file():
            per_class = json.loads(evaluation.read_text()).get("per_class", [])
            print(f"\n{name}: " + ", ".join(filter(None, map(PER_CLASS[args.task], per_class))))


if __name__ == "__main__":
    main()
