"""Write a torchvision data set (MNIST by default) out as an image folder of PNG files:
OUT/train/<class>/<n>.png and OUT/test/<class>/<n>.png, the layout `image_folder` reads.
Used to measure configs/image_folder.yaml on real pictures in the real format.

Usage: python benchmarks/export_png_folder.py OUT [--root data] [--name mnist] [--train 20000] [--test 10000]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[1] / "data"))
    parser.add_argument("--name", default="mnist", help="mnist, fashion_mnist, kmnist, cifar10, cifar100 or svhn")
    parser.add_argument("--train", type=int, default=20000, help="train images to write (the first N)")
    parser.add_argument("--test", type=int, default=10000, help="test images to write")
    args = parser.parse_args()

    from torchkeel.config import DataConfig
    from torchkeel.data.vision import VISION_SETS, _read, _torchvision_class

    info = VISION_SETS[args.name]
    cfg = DataConfig(name=args.name, root=args.root)
    for split, limit in (("train", args.train), ("test", args.test)):
        x, y, classes = _read(cfg, _torchvision_class(info.cls), Path(args.root), train=split == "train")
        names = info.classes or classes
        for n, (image, label) in enumerate(zip(x[:limit], y[:limit].tolist(), strict=True)):
            folder = args.out / split / names[label].replace("/", "-")
            folder.mkdir(parents=True, exist_ok=True)
            pixels = image.permute(1, 2, 0).numpy()  # (H, W, C) uint8
            Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else np.ascontiguousarray(pixels)).save(
                folder / f"{n}.png"
            )
        print(f"{split}: {min(limit, len(x))} images in {args.out / split}")


if __name__ == "__main__":
    main()
