"""Inference over the MNIST test set with a trained torchkeel run (workload 4 of speed.py).

--mode plain: the run's network called directly; --mode predictor: torchkeel's Predictor
(softmax, top-3, Prediction objects); --mode onnx | torchscript | exported-program: the file
`keel export RUN --format MODE --out EXPORTS/MODE` wrote, run by its own runtime (onnxruntime
for ONNX), then argmax. Prints {"images", "seconds"}. --write-pngs FOLDER
instead writes the first 1,000 test images as PNG files and prints their paths (JSON).
"""

import argparse
import json
import time
from pathlib import Path

import torch
from torchvision.datasets import MNIST

from torchkeel.data.images import normalise
from torchkeel.experiment import load_model
from torchkeel.export.formats import FORMATS
from torchkeel.serve.predictor import Predictor

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("run", type=Path)
parser.add_argument("--root", default="data")
parser.add_argument("--mode", choices=("plain", "predictor", *FORMATS), default="plain")
parser.add_argument("--exports", type=Path, default=None, help="folder holding MODE/model.* for the export modes")
parser.add_argument("--write-pngs", type=Path, default=None)
parser.add_argument("--batch", type=int, default=1000)
args = parser.parse_args()

images = MNIST(args.root, train=False, download=False).data  # (10000, 28, 28) uint8
if args.write_pngs is not None:
    from PIL import Image

    paths = [str(args.write_pngs / f"{i:04d}.png") for i in range(1000)]
    for image, path in zip(images, paths, strict=False):
        Image.fromarray(image.numpy()).save(path)
    print(json.dumps(paths))
    raise SystemExit(0)

model, spec, _ = load_model(args.run)
x = normalise(images.unsqueeze(1), spec.mean, spec.std)  # (N, 1, 28, 28)
predictor = Predictor(model, spec)
if args.mode in FORMATS:
    form = FORMATS[args.mode]
    exported = form.load(args.exports / args.mode / f"model{form.suffix}")
start = time.perf_counter()
with torch.inference_mode():
    for i in range(0, len(x), args.batch):
        batch = x[i : i + args.batch]
        if args.mode == "plain":
            model(batch).argmax(1)
        elif args.mode == "predictor":
            predictor.predict_batch(batch, [str(j) for j in range(i, i + len(batch))])
        else:
            exported(batch).argmax(1)
print(json.dumps({"images": len(x), "seconds": time.perf_counter() - start}))
