"""Segmentation speed: torchkeel's training loop against a plain PyTorch loop on the same network
and tensors (training images per second), and the latency of predicting one image through
torchkeel's Predictor against the bare network's forward pass.

    python benchmarks/segment_speed.py                          # synthetic, 64 images 240x320, 3 rounds
    python benchmarks/segment_speed.py --camvid data/camvid     # real CamVid frames at 240x320
    python benchmarks/segment_speed.py --run runs/latest        # latency of a trained run's model
    python benchmarks/segment_speed.py --images 8 --height 64 --width 80 --rounds 1 --epochs 1 --calls 3  # smoke

1. Training throughput. The tensors: --images seeded synthetic images (standard normal pixels,
   i.e. already normalised) with masks of random 16x16 px regions of --classes classes and void
   (255), or with --camvid the first --images frames of CamVid's training folder (val/ +
   valannot/) loaded by ``torchkeel.data.load({"name": "mask_folder", ...})`` as
   configs/camvid.yaml does (resized to --height x --width, normalised, void 255). The network:
   --model, built by ``torchkeel.models.build`` with random init after ``torch.manual_seed``
   (U-Net with the EfficientNet-Lite0 encoder by default), the same weights on both sides. Both
   sides train at --threads threads, fp32, AdamW at a constant --lr (weight decay 0.01), pixel
   cross-entropy with void ignored, batches of --batch, shuffled, the last one short:
     torchkeel  ``torchkeel.fit(model, bundle, loss="cross_entropy", schedule="constant", ...)``
                on a DataBundle of those tensors (no val split, no augmentation); its loop keeps
                running metrics (the pixel confusion matrix) on every step, as it always does
     plain      benchmarks/peers/segment_plain.py: DataLoader over a TensorDataset,
                ``model.train()``, forward, ``F.cross_entropy(out, y, ignore_index=255)``,
                zero_grad / backward / step (torchvision's references/segmentation style)
   Each side first trains --warmup untimed steps, then --epochs timed epochs over all the images;
   each in its own process (fit sets process-wide state: threads, glibc's allocator),
   interleaved with the order alternating, --rounds rounds; medians (min-max).
2. Latency of one image, in this process at --threads threads, model in eval mode: the network
   built as above (or ``--run RUN``: the run's model through ``Predictor.from_run``), --calls
   calls of each variant interleaved, after 3 warm-up calls each; medians (min-max):
     plain forward                ``model(x)`` under inference_mode, x (1, 3, H, W) preprocessed
     plain forward + argmax       the same and ``.argmax(1)``: the mask as a tensor
     Predictor.predict_batch      torchkeel's: forward, argmax, class shares, the mask as a PNG
                                  data URL (what ``keel serve`` returns)
     Predictor.predict_images     the same from a PNG file: decode, resize, normalise first (a
                                  CamVid frame at 480x360 with --camvid, else a random picture)
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
from collections.abc import Callable
from pathlib import Path

import numpy as np
import safetensors.torch
import torch
import torch.nn.functional as F
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from torchkeel.data import DataBundle, load  # noqa: E402
from torchkeel.data.bundle import DataSpec, Split  # noqa: E402
from torchkeel.models import build  # noqa: E402

PEER = ROOT / "benchmarks" / "peers" / "segment_plain.py"
IGNORE = 255  # void pixels in the targets (torchkeel's mask_folder and torchvision's references)
REGION = 16  # side in pixels of the synthetic masks' constant regions
MODELS = {  # --model -> the model config both sides build (random init: speed does not need ImageNet)
    "unet": {"name": "unet", "encoder": "efficientnet_lite0", "pretrained": False},
    "unet_scratch": {"name": "unet"},
    "lraspp_mobilenet_v3": {"name": "lraspp_mobilenet_v3", "pretrained": False},
}
CAMVID_CLASSES = ["Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car", "Pedestrian",
                  "Bicyclist"]  # fmt: skip


# ---- data: synthetic tensors, or CamVid frames through torchkeel's loader
def synthetic(n: int, h: int, w: int, k: int, seed: int = 0) -> tuple[DataSpec, torch.Tensor, torch.Tensor]:
    """A spec and n seeded images (N, 3, H, W) with masks (N, H, W): k classes and void in
    REGION x REGION blocks."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, h, w, generator=g)  # already normalised: mean 0, std 1
    coarse = torch.randint(0, k + 1, (n, 1, -(-h // REGION), -(-w // REGION)), generator=g)  # value k: void
    y = F.interpolate(coarse.float(), scale_factor=REGION, mode="nearest")[:, 0, :h, :w].long()  # (N, H, W)
    y[y == k] = IGNORE
    spec = DataSpec("synthetic", "image", "segmentation", (3, h, w), classes=[f"class{i}" for i in range(k)],
                    mean=[0.0] * 3, std=[1.0] * 3, extra={"ignore_index": IGNORE})  # fmt: skip
    return spec, x, y


def camvid(root: Path, n: int, h: int, w: int) -> tuple[DataSpec, torch.Tensor, torch.Tensor, str]:
    """The first n training frames (val/ + valannot/) as configs/camvid.yaml loads them, and a
    frame's file for predict_images."""
    masks = {"splits": {"train": "val", "test": "test"}, "ignore_index": 11, "classes": CAMVID_CLASSES}
    bundle = load({"name": "mask_folder", "root": str(root), "image": {"size": [h, w]}, "masks": masks})
    return bundle.spec, bundle.train.x[:n], bundle.train.y[:n], bundle.train.sources[0]


def save_inputs(folder: Path, spec: DataSpec, x: torch.Tensor, y: torch.Tensor, warmup: int, batch: int,
                model: str) -> Path:  # fmt: skip
    """tensors.safetensors (x/y_warmup: the first warmup * batch images, cycled; x/y_timed: all),
    spec.json and model.json, which both sides read."""
    index = torch.arange(warmup * batch) % len(x)
    tensors = {"x_warmup": x[index], "y_warmup": y[index], "x_timed": x, "y_timed": y}
    return write_inputs(folder, tensors, spec, MODELS[model])


def write_inputs(folder: Path, tensors: dict[str, torch.Tensor], spec: DataSpec, model_cfg: dict) -> Path:
    """What both sides read: tensors.safetensors, spec.json and model.json (also detect_speed.py's)."""
    safetensors.torch.save_file({k: v.contiguous() for k, v in tensors.items()}, folder / "tensors.safetensors")
    (folder / "spec.json").write_text(json.dumps(spec.to_dict()), encoding="utf-8")
    (folder / "model.json").write_text(json.dumps(model_cfg), encoding="utf-8")
    return folder


def read_inputs(folder: Path) -> tuple[dict[str, torch.Tensor], DataSpec, dict]:
    """The tensors, spec and model config ``write_inputs`` wrote."""
    tensors = safetensors.torch.load_file(folder / "tensors.safetensors")
    spec = DataSpec.from_dict(json.loads((folder / "spec.json").read_text(encoding="utf-8")))
    return tensors, spec, json.loads((folder / "model.json").read_text(encoding="utf-8"))


def tensor_split(tensors: dict[str, torch.Tensor], part: str) -> Split:
    """``x_{part}`` and ``y_{part}`` (part: warmup or timed) as a Split."""
    return Split(tensors[f"x_{part}"], tensors[f"y_{part}"])


# ---- 1. training: torchkeel's side (run in a child process, as the peer is)
def keel_throughput(
    folder: Path, *, batch: int, epochs: int, lr: float, threads: int, seed: int, loss: str = "cross_entropy",
    weight_decay: float = 0.01, split: Callable[[dict[str, torch.Tensor], str], Split] = tensor_split,
) -> dict:  # fmt: skip
    """torchkeel.fit over the warm-up images, then (timed) over all of them: the JSON's numbers.
    ``split(tensors, "warmup" | "timed")`` makes the Split (detect_speed.py's: Ragged targets)."""
    import torchkeel

    tensors, spec, model_cfg = read_inputs(folder)
    torch.manual_seed(seed)  # the same initial weights as the peer's
    model = build(model_cfg, spec)
    options = {"batch_size": batch, "optimizer": "adamw", "lr": lr, "weight_decay": weight_decay,
               "schedule": "constant", "loss": loss, "augment": {"flip": False}, "threads": threads,
               "precision": "fp32", "seed": seed}  # fmt: skip
    warm = split(tensors, "warmup")
    torchkeel.fit(model, DataBundle(spec, warm, None, warm), epochs=1, progress=False, **options)
    timed = split(tensors, "timed")
    run = torchkeel.fit(model, DataBundle(spec, timed, None, timed), epochs=epochs, progress=False, **options)
    images = len(timed.x) * epochs
    return {
        "train_seconds": run.train_seconds,
        "steps": run.history[-1]["step"],
        "images": images,
        "images_per_second": images / run.train_seconds,
        "loss": run.history[-1]["train/loss"],
    }


def measure(side: str, folder: Path, args: argparse.Namespace, seed: int, keel: Path, peer: Path) -> dict:
    """One side's measurement in a fresh process (``keel --keel-child`` or ``peer``): the JSON line it prints."""
    script = [str(keel), "--keel-child", str(folder)] if side == "keel" else [str(peer), "--folder", str(folder)]
    cmd = [sys.executable, *script, "--batch", str(args.batch), "--epochs", str(args.epochs), "--lr", str(args.lr)]
    cmd += ["--threads", str(args.threads), "--seed", str(seed)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"error: the {side} side failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def head_to_head(
    folder: Path, args: argparse.Namespace, keel: Path = Path(__file__), peer: Path = PEER
) -> dict[str, list[dict]]:
    """``args.rounds`` rounds of both sides; ``keel``: the script whose --keel-child trains with fit."""
    rows: dict[str, list[dict]] = {"keel": [], "plain": []}
    for r in range(args.rounds):  # interleaved, the order alternating, so drifts in load hit both
        for side in ("keel", "plain") if r % 2 == 0 else ("plain", "keel"):
            m = measure(side, folder, args, args.seed + r, keel, peer)
            rows[side].append(m)
            line = f"{m['steps']} steps in {m['train_seconds']:.2f} s, {m['images_per_second']:.2f} images/s"
            print(f"round {r} {side:5s}: {line}, loss {m['loss']:.3f}", file=sys.stderr, flush=True)
    return rows


# ---- 2. latency of one image
def latency(calls: dict[str, Callable[[], object]], n: int, threads: int) -> dict[str, list[float]]:
    """Milliseconds of each call, ``n`` times, interleaved in a rotating order, after 3 warm-ups."""
    torch.set_num_threads(threads)
    names = list(calls)
    for name in names * 3:
        calls[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for i in range(n):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            start = time.perf_counter()
            calls[name]()
            times[name].append((time.perf_counter() - start) * 1000)
    return times


def latency_calls(model: torch.nn.Module, spec: DataSpec, picture: str) -> dict[str, Callable[[], object]]:
    from torchkeel.serve.predictor import Predictor

    predictor = Predictor(model, spec)  # puts the model in eval mode
    x = torch.randn(1, *spec.input_shape, generator=torch.Generator().manual_seed(0))  # (1, 3, H, W)

    @torch.inference_mode()
    def forward() -> torch.Tensor:
        return model(x)

    @torch.inference_mode()
    def forward_argmax() -> torch.Tensor:
        return model(x).argmax(1)  # (1, H, W) class indices

    return {
        "plain forward (`model(x)`, inference_mode)": forward,
        "plain forward + argmax (the mask as a tensor)": forward_argmax,
        "torchkeel `Predictor.predict_batch` (+ class shares, mask PNG)": lambda: predictor.predict_batch(x, ["x"]),
        "torchkeel `Predictor.predict_images` (+ PNG decode, resize)": lambda: predictor.predict_images([picture]),
    }


def random_picture(folder: Path, h: int, w: int, name: str = "picture.png") -> str:
    """A random RGB picture of h x w (PNG, or JPEG by ``name``) for predict_images when no real
    frame is at hand."""
    pixels = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / name)
    return str(folder / name)


# ---- the report
def spread(values: list[float], fmt: str = ".2f") -> str:
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def training_table(rows: dict[str, list[dict]], args: argparse.Namespace, what: str) -> None:
    k = [r["images_per_second"] for r in rows["keel"]]
    p = [r["images_per_second"] for r in rows["plain"]]
    steps = rows["keel"][0]["steps"]
    print(f"training: {what}; {args.model}, batch {args.batch}, {args.epochs} timed epoch(s) ({steps} steps) "
          f"after {args.warmup} warm-up step(s), {args.rounds} round(s) (medians, min-max), "
          f"{args.threads} threads, fp32\n")  # fmt: skip
    print("| network | train s torchkeel | train s plain | images/s torchkeel (`fit`) | images/s plain loop | "
          "torchkeel / plain |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    ks, ps = ([r["train_seconds"] for r in rows[s]] for s in ("keel", "plain"))
    print(f"| {args.model} | {spread(ks)} | {spread(ps)} | {spread(k)} | {spread(p)} | "
          f"**{statistics.median(k) / statistics.median(p):.2f}** |")  # fmt: skip
    losses = ", ".join(f"{s} {statistics.median(r['loss'] for r in rows[s]):.3f}" for s in ("keel", "plain"))
    print(f"\nlast epoch's mean train loss (median over rounds): {losses}")


def latency_table(times: dict[str, list[float]], spec: DataSpec, what: str, threads: int) -> None:
    _, h, w = spec.input_shape
    print(f"\nlatency of one {h}x{w} image, {what}; {threads} threads, {len(next(iter(times.values())))} calls "
          f"each (medians, min-max)\n")  # fmt: skip
    print("| call | ms | ratio to plain forward |")
    print("|---|---|---|")
    base = statistics.median(next(iter(times.values())))
    for name, ms in times.items():
        print(f"| {name} | {spread(ms, '.1f')} | {statistics.median(ms) / base:.2f} |")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--camvid", type=Path, default=None, help="CamVid folder (val/ valannot/ ...): real frames")
    parser.add_argument("--run", type=Path, default=None, help="a trained segmentation run: its model's latency")
    parser.add_argument("--model", choices=sorted(MODELS), default="unet", help="unet: U-Net + Lite0 encoder")
    return speed_arguments(parser, height=240, width=320, classes=11, argv=argv)


def speed_arguments(
    parser: argparse.ArgumentParser, *, height: int, width: int, classes: int, argv: list[str] | None
) -> argparse.Namespace:
    """The arguments both speed benchmarks share (sizes, the loop, rounds, latency calls), parsed."""
    parser.add_argument("--images", type=int, default=64, help="images per timed epoch")
    parser.add_argument("--height", type=int, default=height)
    parser.add_argument("--width", type=int, default=width)
    parser.add_argument("--classes", type=int, default=classes, help="synthetic data's classes")
    parser.add_argument("--batch", type=int, default=8, help="images per step")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per round and side")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before them")
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW lr, constant")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=30, help="latency: calls per variant")
    parser.add_argument("--threads", type=int, default=2, help="torch threads, both sides")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keel-child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.warmup = max(1, args.warmup)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.keel_child is not None:
        m = keel_throughput(args.keel_child, batch=args.batch, epochs=args.epochs, lr=args.lr, threads=args.threads,
                            seed=args.seed)  # fmt: skip
        return print(json.dumps(m), flush=True)
    if args.run is not None and not (args.run / "model.json").is_file():
        raise SystemExit(f"error: --run {args.run} is not a run folder (no model.json)")
    print(f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        if args.camvid is not None:
            spec, x, y, picture = camvid(args.camvid, args.images, args.height, args.width)
            what = f"{len(x)} CamVid frames ({args.camvid}) at {args.height}x{args.width}, {len(spec.classes)} classes"
        else:
            spec, x, y = synthetic(args.images, args.height, args.width, args.classes, args.seed)
            picture = random_picture(Path(tmp), args.height, args.width)
            what = f"{len(x)} synthetic images at {args.height}x{args.width}, {args.classes} classes"
        folder = save_inputs(Path(tmp), spec, x, y, args.warmup, args.batch, args.model)
        rows = head_to_head(folder, args)
        if args.run is not None:
            from torchkeel.serve.predictor import Predictor

            trained = Predictor.from_run(args.run)
            model, lat_spec, lat_what = trained.model, trained.spec, f"the model of {args.run}"
            _, h, w = lat_spec.input_shape
            picture = picture if args.camvid is not None else random_picture(Path(tmp), h, w)
        else:
            torch.manual_seed(args.seed)
            model, lat_spec, lat_what = build(MODELS[args.model], spec), spec, f"{args.model}, random init"
        times = latency(latency_calls(model, lat_spec, picture), args.calls, args.threads)
    training_table(rows, args, what)
    latency_table(times, lat_spec, lat_what, args.threads)


if __name__ == "__main__":
    main()
