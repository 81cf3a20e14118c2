"""Does ImageNet pretraining matter for classifying real photos? Four EfficientNet-Lite0
classifiers of CamVid street-scene crops, side by side: test accuracy, macro F1 and train time.

    python benchmarks/transfer_crops.py --out /tmp/transfer-crops
    python benchmarks/transfer_crops.py --out /tmp/tc --epochs 1 --max-per-class 20   # smoke test

1. Data: a real image-folder classification set cut from CamVid (data/README.md, "camvid").
   Every frame is cut into non-overlapping --crop x --crop squares at full resolution (480x360:
   7 x 5 crops of 64 px); a crop is labelled with its majority class when that class covers at
   least --purity of its pixels, void (index 11) included in the count, else skipped. Crops of
   the val/ frames (101) make OUT/crops/train/<class>/, crops of the test/ frames (62, other
   videos) make OUT/crops/test/<class>/, so no test video is ever seen in training; keel cuts
   its val split (10%) from train. Classes with fewer than --min-train train crops are left out
   of both (at 64 px: Sky, Building, Road, Pavement and Tree remain). --max-per-class caps each
   class in each split (a seeded sample) for a smoke test.
2. Variants, each ``python -m torchkeel train --data image_folder --set data.root=OUT/crops
   --set model.name=efficientnet_lite0 ...`` in its own folder under OUT, one torch thread each,
   --parallel at once; the same epochs, batch, seed, crops and input size for all:
     ImageNet, frozen         model.pretrained=true model.freeze_backbone=true (a linear probe:
                              the backbone stays in eval mode, only the head trains), --lr
     ImageNet, fine-tuned     model.pretrained=true, every layer trained at --finetune-lr
     random init, frozen      a linear probe of a random network (the floor), --lr
     random init, trained     every layer from scratch, --lr
   AdamW, one-cycle, no augmentation (add ``--set data.augment.flip=true`` etc. for every variant).
3. Table (stdout, Markdown): test accuracy and macro F1 from each run's runs/latest/summary.json,
   training seconds and the whole command's. The runs stay in OUT/variantN for ``keel report``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
# CamVid in SegNet's 11-class form (data/README.md); index 11 is void
CLASSES = ("Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car", "Pedestrian",
           "Bicyclist")  # fmt: skip
VOID = 11
SPLITS = {"train": ("val", "valannot"), "test": ("test", "testannot")}  # our split: CamVid's image, mask folders


# ---- 1. data: labelled crops of whole frames
def frame_crops(image: np.ndarray, mask: np.ndarray, size: int, purity: float) -> list[tuple[int, np.ndarray, str]]:
    """(class, (size, size, 3) crop, name suffix) for every non-overlapping crop of one frame
    whose majority class (void never) covers at least ``purity`` of its pixels."""
    out = []
    for r in range(mask.shape[0] // size):
        for c in range(mask.shape[1] // size):
            window = np.s_[r * size : (r + 1) * size, c * size : (c + 1) * size]
            counts = np.bincount(mask[window].ravel(), minlength=VOID + 1)  # void counts in the total
            k = int(counts.argmax())
            if k != VOID and counts[k] >= purity * size * size:
                out.append((k, image[window], f"r{r}c{c}"))
    return out


def cut_split(camvid: Path, images: str, masks: str, size: int, purity: float) -> list[tuple[int, np.ndarray, str]]:
    """Every labelled crop of one CamVid folder: (class, crop, file stem)."""
    crops = []
    for path in sorted((camvid / images).glob("*.png")):
        mask_path = camvid / masks / path.name
        if not mask_path.is_file():
            continue  # a frame without its mask: nothing to label it with
        image = np.asarray(Image.open(path).convert("RGB"))  # (H, W, 3) uint8
        mask = np.asarray(Image.open(mask_path))  # (H, W) class indices 0-11
        crops += [(k, crop, f"{path.stem}_{where}") for k, crop, where in frame_crops(image, mask, size, purity)]
    return crops


def write_crops(args: argparse.Namespace) -> tuple[Path, dict[str, Counter]]:
    """OUT/crops/{train,test}/<class>/*.png and the crops written per split and class."""
    folder = args.out / "crops"
    if folder.exists():  # ours (it has our record) is rewritten; anything else is left alone
        if not (folder / "crops.json").is_file():
            raise SystemExit(f"error: {folder} exists and was not written by this script: choose another --out")
        shutil.rmtree(folder)
    cut = {split: cut_split(args.camvid, *dirs, args.crop, args.purity) for split, dirs in SPLITS.items()}
    kept = [k for k, n in sorted(Counter(k for k, _, _ in cut["train"]).items()) if n >= args.min_train]
    if len(kept) < 2:
        raise SystemExit(f"error: fewer than 2 classes have {args.min_train} train crops: lower --min-train or --crop")
    rng = np.random.default_rng(args.seed)
    counts: dict[str, Counter] = {}
    for split, crops in cut.items():
        counts[split] = Counter()
        for k in kept:
            mine = [c for c in crops if c[0] == k]
            if args.max_per_class is not None and len(mine) > args.max_per_class:
                mine = [mine[i] for i in sorted(rng.choice(len(mine), args.max_per_class, replace=False))]
            (folder / split / CLASSES[k]).mkdir(parents=True, exist_ok=True)
            for _, crop, stem in mine:
                Image.fromarray(crop).save(folder / split / CLASSES[k] / f"{stem}.png")
            counts[split][CLASSES[k]] = len(mine)
    settings = {"crop": args.crop, "purity": args.purity, "min_train": args.min_train, "max": args.max_per_class}
    record = {"settings": settings, "counts": {s: dict(c) for s, c in counts.items()}}
    (folder / "crops.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
    return folder, counts


def count_table(counts: dict[str, Counter]) -> None:
    print("| class | train crops (val/ frames) | test crops (test/ frames) |")
    print("|---|---|---|")
    for name in counts["train"]:
        print(f"| {name} | {counts['train'][name]} | {counts['test'][name]} |")
    print(f"| all | {sum(counts['train'].values())} | {sum(counts['test'].values())} |\n", flush=True)


# ---- 2. the four variants, each a `keel train` process
def variants(args: argparse.Namespace) -> dict[str, list[str]]:
    """name -> the variant's own --set overrides."""
    return {
        "ImageNet, frozen (linear probe)": ["model.pretrained=true", "model.freeze_backbone=true"],
        "ImageNet, fine-tuned": ["model.pretrained=true", f"train.optimizer.lr={args.finetune_lr}"],
        "random init, frozen (linear probe)": ["model.pretrained=false", "model.freeze_backbone=true"],
        "random init, trained": ["model.pretrained=false"],
    }


def common_overrides(args: argparse.Namespace, crops: Path) -> list[str]:
    """The --set overrides every variant shares."""
    shared = [
        f"data.root={crops.resolve()}",
        f"data.image.size={args.size or args.crop}",
        "model.name=efficientnet_lite0",
        f"train.epochs={args.epochs}",
        f"train.batch_size={args.batch}",
        "train.optimizer.name=adamw",
        f"train.optimizer.lr={args.lr}",  # the fine-tuned variant's own lr comes after and wins
        "train.threads=1",
        "eval.metrics=[accuracy,f1]",
        f"seed={args.seed}",
        *args.overrides,
    ]
    return ["--data", "image_folder", *[a for kv in shared for a in ("--set", kv)]]


def run_variants(chosen: dict[str, list[str]], common: list[str], args: argparse.Namespace) -> dict:
    """Train every variant, --parallel at a time: name -> (folder, exit code, wall seconds)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    names = list(variants(args))
    pending, running, done = list(chosen.items()), [], {}
    while pending or running:
        while pending and len(running) < args.parallel:
            name, extra = pending.pop(0)
            folder = args.out / f"variant{names.index(name)}"
            folder.mkdir(parents=True, exist_ok=True)
            cmd = [sys.executable, "-m", "torchkeel", "train", *common, *[a for kv in extra for a in ("--set", kv)]]
            log = (folder / "train.log").open("w")
            proc = subprocess.Popen(cmd, cwd=folder, stdout=log, stderr=subprocess.STDOUT, env=env)
            running.append((name, folder, proc, time.perf_counter()))
            print(f"started {name} in {folder}", file=sys.stderr, flush=True)
        time.sleep(2)
        for item in list(running):
            name, folder, proc, start = item
            if proc.poll() is not None:
                running.remove(item)
                done[name] = (folder, proc.returncode, time.perf_counter() - start)
                print(f"finished {name}: exit {proc.returncode}", file=sys.stderr, flush=True)
    return done


# ---- 3. the report
def result_table(chosen: dict[str, list[str]], done: dict) -> None:
    print("| variant | test accuracy | test F1 (macro) | training | whole command |")
    print("|---|---|---|---|---|")
    for name in chosen:
        folder, code, seconds = done[name]
        summary_file = folder / "runs" / "latest" / "summary.json"
        if code != 0 or not summary_file.is_file():
            print(f"| {name} | failed (exit {code}; see {folder / 'train.log'}) | | | |")
            continue
        summary = json.loads(summary_file.read_text())
        test = summary["test"]
        print(f"| {name} | {test['accuracy']:.4f} | {test['f1']:.4f} | "
              f"{summary['train_seconds']:.0f} s ({summary['epochs']} epochs) | {seconds:.0f} s |")  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--camvid", type=Path, default=ROOT / "data" / "camvid", help="val/ valannot/ test/ testannot/")
    parser.add_argument("--out", type=Path, default=Path("transfer-crops"), help="crops and runs go here")
    parser.add_argument("--crop", type=int, default=64, help="crop side, pixels of the 480x360 frames")
    parser.add_argument("--size", type=int, default=None, help="side the model sees (resized); default: --crop")
    parser.add_argument("--purity", type=float, default=0.7, help="share of a crop its class must cover")
    parser.add_argument("--min-train", type=int, default=30, help="train crops a class needs to be kept")
    parser.add_argument("--max-per-class", type=int, default=None, help="cap per class and split (smoke tests)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch", type=int, default=64, help="crops per step")
    parser.add_argument("--lr", type=float, default=3e-3, help="AdamW peak lr (one-cycle) of probes and scratch")
    parser.add_argument("--finetune-lr", type=float, default=1e-3, help="AdamW peak lr of the fine-tuned variant")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="KEY=VALUE for every variant")
    parser.add_argument("--only", nargs="*", help="variant names (substrings) to run")
    parser.add_argument("--parallel", type=int, default=2, help="variants trained at once, one thread each")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not (args.camvid / "val").is_dir() or not (args.camvid / "test").is_dir():
        raise SystemExit(f"error: {args.camvid} has no val/ and test/ folders: see data/README.md, 'camvid'")
    args.out.mkdir(parents=True, exist_ok=True)
    crops, counts = write_crops(args)
    print(f"CamVid crops of {args.crop} px, class >= {args.purity:.0%} of the pixels, classes with >= "
          f"{args.min_train} train crops, in {crops}\n")  # fmt: skip
    count_table(counts)
    chosen = {k: v for k, v in variants(args).items() if not args.only or any(s in k for s in args.only)}
    done = run_variants(chosen, common_overrides(args, crops), args)
    print(f"EfficientNet-Lite0 at {args.size or args.crop} px, {args.epochs} epochs, batch {args.batch}, "
          f"AdamW one-cycle lr {args.lr:g} (fine-tuned: {args.finetune_lr:g}), seed {args.seed}, "
          f"1 thread per run, {args.parallel} at once\n")  # fmt: skip
    result_table(chosen, done)


if __name__ == "__main__":
    main()
