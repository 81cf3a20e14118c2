"""Detection speed: torchkeel's training loop against torchvision's reference-style plain loop on
the same network and tensors (training images per second), and the latency of predicting one
image through torchkeel's Predictor against the bare network's forward pass.

    python benchmarks/detect_speed.py                       # synthetic, 64 images 384x512, 3 rounds
    python benchmarks/detect_speed.py --bccd data/bccd      # real BCCD training images at 384x512
    python benchmarks/detect_speed.py --model fcos_trained  # FCOS with its backbone trained too
    python benchmarks/detect_speed.py --images 8 --height 96 --width 128 --rounds 1 --epochs 1 --calls 3  # smoke

1. Training throughput. The tensors: --images seeded synthetic images (standard normal pixels,
   i.e. already normalised), each with 3 to 15 boxes of --classes classes (sides 5-30% of the
   image's shorter side, anywhere in it), or with --bccd the first --images images of BCCD's
   training split loaded by ``torchkeel.data.load({"name": "box_folder", ...})`` as
   configs/bccd.yaml does (letterboxed to --height x --width, normalised). The targets travel
   as a Ragged's flat (rows, 6) values and per-image lengths. The network: --model, built by
   ``torchkeel.models.build`` with random init after ``torch.manual_seed``, the same weights on
   both sides: by default configs/bccd.yaml's FCOS on an EfficientNet-Lite0 feature pyramid with
   the backbone frozen (random weights: speed does not need ImageNet's). Both sides train at
   --threads threads, fp32, AdamW at a constant --lr (weight decay 1e-4), the detector's own
   losses summed, batches of --batch, shuffled, the last one short:
     torchkeel  ``torchkeel.fit(model, bundle, loss="detector", schedule="constant", ...)`` on a
                DataBundle of those tensors with Ragged targets (no val split, no augmentation);
                its loop keeps the running loss on every step, as it always does
     plain      benchmarks/peers/detect_plain.py: a Dataset of (image, target dict), a DataLoader
                with the list collate, ``model.train()``, ``sum(model.net(images, targets)
                .values())`` on the torchvision detector inside the Detector, zero_grad /
                backward / step (torchvision's references/detection style)
   Each side first trains --warmup untimed steps, then --epochs timed epochs over all the images;
   each in its own process (fit sets process-wide state: threads, glibc's allocator),
   interleaved with the order alternating, --rounds rounds; medians (min-max).
2. Latency of one image, in this process at --threads threads, model in eval mode (built as
   above), --calls calls of each variant interleaved, after 3 warm-up calls each; medians
   (min-max):
     plain torchvision forward    ``model.net([image])`` under inference_mode: torchvision's
                                  per-image dicts of boxes, scores, labels
     Detector forward             ``model(x)``: the same, padded to (1, 100, 6) rows
     Predictor.predict_batch      torchkeel's: forward, the boxes scoring 0.3 or more as JSON
     Predictor.predict_images     the same from a picture file: decode, letterbox, normalise
                                  first, boxes mapped back to its pixels (with --bccd a BCCD
                                  JPEG at 640x480, else a random JPEG at 1.25x the input size)
   With random weights few boxes score above the detectors' 0.05 threshold, so NMS has little
   to do: a trained model's postprocessing costs more.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from segment_speed import (  # noqa: E402  (the generic pieces: child processes, rounds, latency, tables)
    head_to_head,
    keel_throughput,
    latency,
    latency_table,
    random_picture,
    speed_arguments,
    training_table,
    write_inputs,
)

from torchkeel.data import load  # noqa: E402
from torchkeel.data.bundle import DataSpec, Split  # noqa: E402
from torchkeel.data.ragged import Ragged  # noqa: E402
from torchkeel.models import build  # noqa: E402

PEER = ROOT / "benchmarks" / "peers" / "detect_plain.py"
WEIGHT_DECAY = 1e-4  # configs/bccd.yaml's, and torchvision's references/detection default
BOXES = (3, 15)  # synthetic boxes per image, at least and at most
SIDES = (0.05, 0.3)  # synthetic box sides, fractions of the image's shorter side
MODELS = {  # --model -> the model config both sides build (random init: speed does not need ImageNet)
    "fcos": {"name": "fcos", "pretrained": False, "freeze_backbone": True},  # configs/bccd.yaml's, frozen
    "fcos_trained": {"name": "fcos", "pretrained": False},  # the backbone trained too
    "retinanet": {"name": "retinanet", "pretrained": False, "freeze_backbone": True},
}


# ---- data: synthetic tensors, or BCCD images through torchkeel's loader
def synthetic(n: int, h: int, w: int, k: int, seed: int = 0) -> tuple[DataSpec, torch.Tensor, Ragged]:
    """A spec and n seeded images (N, 3, H, W) with BOXES boxes each: (n_i, 6) rows of class,
    x1, y1, x2, y2 in pixels, difficult 0."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, h, w, generator=g)  # already normalised: mean 0, std 1
    items = []
    for _ in range(n):
        m = int(torch.randint(BOXES[0], BOXES[1] + 1, (1,), generator=g))
        sides = torch.empty(m, 2).uniform_(*SIDES, generator=g) * min(h, w)  # (m, 2) width, height
        corner = torch.rand(m, 2, generator=g) * (torch.tensor([w, h]) - sides)  # (m, 2) x1, y1
        label = torch.randint(0, k, (m, 1), generator=g).float()
        items.append(torch.cat([label, corner, corner + sides, torch.zeros(m, 1)], 1))  # (m, 6)
    spec = DataSpec("synthetic", "image", "detection", (3, h, w), classes=[f"class{i}" for i in range(k)],
                    mean=[0.0] * 3, std=[1.0] * 3, extra={"resize": "letterbox"})  # fmt: skip
    return spec, x, Ragged.from_list(items)


def bccd(root: Path, n: int, h: int, w: int) -> tuple[DataSpec, torch.Tensor, Ragged, str]:
    """The first n training images as configs/bccd.yaml loads them, and an image's file for predict_images."""
    bundle = load({"name": "box_folder", "root": str(root), "image": {"size": [h, w]}})
    return bundle.spec, bundle.train.x[:n], bundle.train.y[:n], bundle.train.sources[0]


def save_inputs(folder: Path, spec: DataSpec, x: torch.Tensor, y: Ragged, warmup: int, batch: int,
                model: str) -> Path:  # fmt: skip
    """tensors.safetensors (x_warmup and y_warmup_values/_lengths: the first warmup * batch images,
    cycled; x_timed and y_timed_values/_lengths: all), spec.json and model.json."""
    index = torch.arange(warmup * batch) % len(x)
    tensors = {"x_warmup": x[index], "x_timed": x}
    for part, targets in (("warmup", y.index_select(0, index)), ("timed", y)):
        tensors |= {f"y_{part}_values": targets.values.float(), f"y_{part}_lengths": targets.lengths}
    return write_inputs(folder, tensors, spec, MODELS[model])


def ragged_split(tensors: dict[str, torch.Tensor], part: str) -> Split:
    """``x_{part}`` and the Ragged of ``y_{part}_values`` / ``y_{part}_lengths`` as a Split."""
    return Split(tensors[f"x_{part}"], Ragged(tensors[f"y_{part}_values"], tensors[f"y_{part}_lengths"]))


# ---- 2. latency of one image
def latency_calls(model: torch.nn.Module, spec: DataSpec, picture: str) -> dict[str, Callable[[], object]]:
    from torchkeel.serve.predictor import Predictor

    predictor = Predictor(model, spec)  # puts the model in eval mode
    x = torch.randn(1, *spec.input_shape, generator=torch.Generator().manual_seed(0))  # (1, 3, H, W)

    @torch.inference_mode()
    def net() -> list[dict[str, torch.Tensor]]:
        return model.net([x[0]])  # torchvision's detector, one (3, H, W) image

    @torch.inference_mode()
    def detector() -> torch.Tensor:
        return model(x)  # (1, 100, 6)

    return {
        "plain torchvision forward (`model.net([image])`, inference_mode)": net,
        "Detector forward (`model(x)`: + padded to (1, 100, 6))": detector,
        "torchkeel `Predictor.predict_batch` (+ boxes >= 0.3 as JSON)": lambda: predictor.predict_batch(x, ["x"]),
        "torchkeel `Predictor.predict_images` (+ JPEG decode, letterbox)": lambda: predictor.predict_images([picture]),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bccd", type=Path, default=None, help="BCCD folder (holding BCCD/): real images")
    parser.add_argument("--model", choices=sorted(MODELS), default="fcos", help="fcos: FCOS + frozen Lite0 FPN")
    return speed_arguments(parser, height=384, width=512, classes=3, argv=argv)


def inputs(args: argparse.Namespace, tmp: Path) -> tuple[DataSpec, torch.Tensor, Ragged, str, str]:
    """The spec, images, targets, the picture for predict_images and what they are, in words."""
    if args.bccd is not None:
        spec, x, y, picture = bccd(args.bccd, args.images, args.height, args.width)
        what = f"{len(x)} BCCD images ({args.bccd})"
    else:
        spec, x, y = synthetic(args.images, args.height, args.width, args.classes, args.seed)
        picture = random_picture(tmp, args.height * 5 // 4, args.width * 5 // 4, "picture.jpg")
        what = f"{len(x)} synthetic images"
    return (
        spec,
        x,
        y,
        picture,
        f"{what} at {args.height}x{args.width}, {len(spec.classes)} classes, {len(y.values)} boxes",
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.keel_child is not None:
        m = keel_throughput(args.keel_child, batch=args.batch, epochs=args.epochs, lr=args.lr, threads=args.threads,
                            seed=args.seed, loss="detector", weight_decay=WEIGHT_DECAY, split=ragged_split)  # fmt: skip
        return print(json.dumps(m), flush=True)
    print(f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        spec, x, y, picture, what = inputs(args, Path(tmp))
        folder = save_inputs(Path(tmp), spec, x, y, args.warmup, args.batch, args.model)
        rows = head_to_head(folder, args, Path(__file__), PEER)
        torch.manual_seed(args.seed)
        model = build(MODELS[args.model], spec)
        times = latency(latency_calls(model, spec, picture), args.calls, args.threads)
    training_table(rows, args, what)
    latency_table(times, spec, f"{args.model}, random init", args.threads)


if __name__ == "__main__":
    main()
