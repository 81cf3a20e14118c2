"""A plain PyTorch segmentation training loop, torchvision-reference style: the peer of
benchmarks/segment_speed.py.

The network is built by ``torchkeel.models.build`` from the model config segment_speed.py hands
over (U-Net with the EfficientNet-Lite0 encoder by default, random init), so both sides train
the same modules with the same initial weights; everything else is the textbook loop of
torchvision's references/segmentation/train.py: a DataLoader over a TensorDataset of the given
tensors (shuffled, batches of --batch, the last one short, no workers), ``model.train()``,
forward, ``F.cross_entropy(out, y, ignore_index=255)``, AdamW (--lr, torch's default weight
decay 0.01, constant lr), ``zero_grad`` / ``backward`` / ``step``. Nothing else: no metrics,
validation, checkpoints or logging. One untimed epoch over ``x_warmup, y_warmup`` first
(kernels, allocator), then --epochs timed epochs over ``x_timed, y_timed``.

Prints one JSON line: train_seconds (the timed epochs), steps, images (seen in the timed
epochs), images_per_second and loss (the last epoch's mean, as fit's train/loss).

    python benchmarks/peers/segment_plain.py --folder DIR --batch 8 --epochs 2 --threads 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from torchkeel.data.bundle import DataSpec  # noqa: E402
from torchkeel.models import build  # noqa: E402

IGNORE = 255  # void pixels: in no loss (torchvision's references use 255 too)


def train_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer) -> torch.Tensor:
    """One pass over ``loader``: the summed batch losses (a tensor: no host sync per step)."""
    model.train()
    total = torch.zeros(())
    for x, y in loader:  # (B, 3, H, W) float, (B, H, W) int64
        out = model(x)  # (B, K, H, W) logits
        loss = F.cross_entropy(out, y, ignore_index=IGNORE)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach()
    return total


def train_throughput(
    tensors: dict[str, torch.Tensor], spec: DataSpec, model_cfg: dict, *, batch: int = 8, epochs: int = 2,
    lr: float = 1e-3, threads: int = 2, seed: int = 0,
) -> dict[str, float]:  # fmt: skip
    """Warm up on ``x_warmup, y_warmup``, then train ``epochs`` timed epochs on ``x_timed, y_timed``."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)  # the same initial weights as torchkeel's side (its fit seeds after building)
    model = build(model_cfg, spec)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    warm = TensorDataset(tensors["x_warmup"], tensors["y_warmup"])
    timed = TensorDataset(tensors["x_timed"], tensors["y_timed"])
    train_epoch(model, DataLoader(warm, batch_size=batch, shuffle=True, generator=g), optimizer)
    loader = DataLoader(timed, batch_size=batch, shuffle=True, generator=g)
    start = time.perf_counter()
    for _ in range(epochs):
        total = train_epoch(model, loader, optimizer)
    loss = float(total) / len(loader)  # the one host sync: it waits for the last step, which counts
    seconds = time.perf_counter() - start
    images = len(timed) * epochs
    return {
        "train_seconds": seconds,
        "steps": len(loader) * epochs,
        "images": images,
        "images_per_second": images / seconds,
        "loss": loss,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, required=True, help="tensors.safetensors, spec.json, model.json")
    parser.add_argument("--batch", type=int, default=8, help="images per step")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs")
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW lr, constant")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    tensors = safetensors.torch.load_file(args.folder / "tensors.safetensors")
    spec = DataSpec.from_dict(json.loads((args.folder / "spec.json").read_text(encoding="utf-8")))
    model_cfg = json.loads((args.folder / "model.json").read_text(encoding="utf-8"))
    result = train_throughput(
        tensors, spec, model_cfg, batch=args.batch, epochs=args.epochs, lr=args.lr, threads=args.threads,
        seed=args.seed,
    )  # fmt: skip
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
