"""A plain PyTorch detection training loop, torchvision-reference style: the peer of
benchmarks/detect_speed.py.

The network is built by ``torchkeel.models.build`` from the model config detect_speed.py hands
over (FCOS on an EfficientNet-Lite0 feature pyramid by default, random init, backbone frozen),
so both sides train the same modules with the same initial weights; the peer then drives the
torchvision detector inside torchkeel's ``Detector`` (``model.net``) directly, as
torchvision's references/detection/train.py and engine.py's ``train_one_epoch`` do: a Dataset
of (image, target dict) pairs, labels 1..K (0 is torchvision's background), a DataLoader with
the list collate ``tuple(zip(*batch))`` (shuffled, batches of --batch, the last one short, no
workers), ``model.train()``, ``loss = sum(model.net(images, targets).values())``, AdamW over
the parameters that train (--lr, weight decay 1e-4 as the references' default, constant lr),
``zero_grad`` / ``backward`` / ``step``. Nothing else: no metrics, evaluation, checkpoints,
logging, or the references' per-step ``loss.item()`` (a host sync, and no work on a CPU).
One untimed epoch over the warm-up images first (kernels, allocator), then --epochs timed
epochs over the timed ones.

Prints one JSON line: train_seconds (the timed epochs), steps, images (seen in the timed
epochs), images_per_second and loss (the last epoch's mean, as fit's train/loss).

    python benchmarks/peers/detect_plain.py --folder DIR --batch 8 --epochs 2 --threads 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import safetensors.torch
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from torchkeel.data.bundle import DataSpec  # noqa: E402
from torchkeel.models import build  # noqa: E402

WEIGHT_DECAY = 1e-4  # torchvision's references/detection default (--wd), and configs/bccd.yaml's


class BoxImages(Dataset):
    """Image i and its target dict, from flat box rows (class, x1, y1, x2, y2, difficult) and
    a row count per image."""

    def __init__(self, images: torch.Tensor, rows: torch.Tensor, lengths: torch.Tensor):
        self.images = images  # (N, 3, H, W), normalised
        self.rows = list(torch.split(rows, lengths.tolist()))  # N tensors of (n, 6)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        rows = self.rows[i]
        return self.images[i], {"boxes": rows[:, 1:5], "labels": rows[:, 0].long() + 1}


def collate_fn(batch: list) -> tuple:
    return tuple(zip(*batch, strict=True))  # torchvision's references/detection/utils.py


def train_one_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer) -> torch.Tensor:
    """One pass over ``loader``: the summed batch losses (a tensor: no host sync per step)."""
    model.train()  # the Detector's train(): a pretrained backbone's BatchNorm would stay in eval
    total = torch.zeros(())
    for images, targets in loader:  # B tensors (3, H, W), B dicts of boxes (n, 4) and labels (n,)
        loss_dict = model.net(list(images), list(targets))  # torchvision's detector: its losses
        loss = sum(loss_dict.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach()
    return total


def train_throughput(folder: Path, *, batch: int, epochs: int, lr: float, threads: int, seed: int) -> dict:
    """Warm up on the ``*_warmup`` tensors, then train ``epochs`` timed epochs on the ``*_timed`` ones."""
    torch.set_num_threads(threads)
    t = safetensors.torch.load_file(folder / "tensors.safetensors")
    spec = DataSpec.from_dict(json.loads((folder / "spec.json").read_text(encoding="utf-8")))
    torch.manual_seed(seed)  # the same initial weights as torchkeel's side (its fit seeds after building)
    model = build(json.loads((folder / "model.json").read_text(encoding="utf-8")), spec)
    params = [p for p in model.parameters() if p.requires_grad]  # as the references: the frozen backbone is out
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=WEIGHT_DECAY)
    g = torch.Generator().manual_seed(seed)
    warm = BoxImages(t["x_warmup"], t["y_warmup_values"], t["y_warmup_lengths"])
    timed = BoxImages(t["x_timed"], t["y_timed_values"], t["y_timed_lengths"])
    loader = DataLoader(warm, batch_size=batch, shuffle=True, generator=g, collate_fn=collate_fn)
    train_one_epoch(model, loader, optimizer)
    loader = DataLoader(timed, batch_size=batch, shuffle=True, generator=g, collate_fn=collate_fn)
    start = time.perf_counter()
    totals = [train_one_epoch(model, loader, optimizer) for _ in range(epochs)]
    loss = float(totals[-1]) / len(loader)  # the one host sync: it waits for the last step, which counts
    seconds = time.perf_counter() - start
    steps, images = len(loader) * epochs, len(timed) * epochs
    rate = images / seconds
    return {"train_seconds": seconds, "steps": steps, "images": images, "images_per_second": rate, "loss": loss}


def get_args_parser() -> argparse.ArgumentParser:  # the references' name
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, required=True, help="tensors.safetensors, spec.json, model.json")
    for flag, kind, default, what in (
        ("--batch", int, 8, "images per step"),
        ("--epochs", int, 2, "timed epochs"),
        ("--lr", float, 1e-3, "AdamW lr, constant"),
        ("--threads", int, 2, "torch threads"),
        ("--seed", int, 0, "initial weights and shuffling"),
    ):
        parser.add_argument(flag, type=kind, default=default, help=what)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = get_args_parser().parse_args(argv)
    result = train_throughput(
        args.folder, batch=args.batch, epochs=args.epochs, lr=args.lr, threads=args.threads, seed=args.seed
    )
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
