"""Shared pieces of the peer scripts: the workloads' data and networks, the schedule, the report.

Workloads (``--workload``), each read from files ``benchmarks/speed.py`` names with ``--data``:
  mnist   the real MNIST (torchvision IDX files under --data), the classic CNN
  images  a folder of 32x32 colour PNGs (train/ and test/ folders of classes), simple_cnn's net
  text    train.csv and test.csv (text,label) under --data, an LSTM classifier

Every peer script prints one JSON line: train_seconds (the training loop only: after data
loading and model building, before the test pass), test_accuracy, samples_per_second and
peak_rss_mb (the process's peak resident memory).
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

PEAK_LR = 3e-3  # Adam, peak of the one-cycle schedule
WARMUP = 0.25  # fraction of steps warming up from PEAK_LR / 25
TEXT_LENGTH = 64  # tokens kept per text (torchkeel: data.text.max_length)
BATCH = {"mnist": 128, "images": 128, "text": 64}


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--workload", choices=("mnist", "images", "text"), default="mnist")
    parser.add_argument("--data", default="data", help="mnist: folder holding MNIST/raw; else the generated folder")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bf16", action="store_true", help="sliced.py: bf16 autocast")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (keras: its backend's own choice)")
    return parser.parse_args()


Data = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def load(args: argparse.Namespace) -> Data:
    """(x_train, y_train, x_test, y_test) of the workload, as tensors."""
    return {"mnist": load_mnist, "images": load_image_folder, "text": load_text}[args.workload](args.data)


def load_mnist(root: str) -> Data:
    """Real MNIST from IDX files through torchvision: x (N, 1, 28, 28) float normalised."""
    from torchvision.datasets import MNIST

    train, test = MNIST(root, train=True, download=False), MNIST(root, train=False, download=False)
    x_train = train.data.unsqueeze(1).float() / 255.0
    mean, std = x_train.mean().item(), x_train.std().item()
    x_test = test.data.unsqueeze(1).float() / 255.0
    return (x_train - mean) / std, train.targets, (x_test - mean) / std, test.targets


def load_image_folder(root: str) -> Data:
    """PNGs under root/{train,test}/<class>/: x (N, 3, H, W) normalised per channel by train stats."""
    from PIL import Image

    def read(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        classes = sorted(p.name for p in (Path(root) / split).iterdir())
        paths = [(p, i) for i, c in enumerate(classes) for p in sorted((Path(root) / split / c).glob("*.png"))]
        x = np.stack([np.asarray(Image.open(p).convert("RGB")) for p, _ in paths])  # (N, H, W, 3) uint8
        return torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255.0, torch.tensor([i for _, i in paths])

    (x_train, y_train), (x_test, y_test) = read("train"), read("test")
    mean, std = x_train.mean((0, 2, 3), keepdim=True), x_train.std((0, 2, 3), keepdim=True)
    return (x_train - mean) / std, y_train, (x_test - mean) / std, y_test


def load_text(root: str) -> Data:
    """train.csv/test.csv (text,label): lowercase words, vocabulary from train (0 pad, 1 unknown)."""

    def rows(name: str) -> list[tuple[list[str], str]]:
        with open(Path(root) / name, newline="", encoding="utf-8") as f:
            return [(r["text"].lower().split(), r["label"]) for r in csv.DictReader(f)]

    train, test = rows("train.csv"), rows("test.csv")
    counts = Counter(w for words, _ in train for w in words)
    vocab = {w: i + 2 for i, (w, _) in enumerate(counts.most_common())}
    labels = {c: i for i, c in enumerate(sorted({label for _, label in train}))}

    def encode(part: list[tuple[list[str], str]]) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.zeros(len(part), TEXT_LENGTH, dtype=torch.int64)
        for i, (words, _) in enumerate(part):
            ids = [vocab.get(w, 1) for w in words[:TEXT_LENGTH]]
            x[i, : len(ids)] = torch.tensor(ids)
        return x, torch.tensor([labels[label] for _, label in part])

    return *encode(train), *encode(test)


class MnistNet(nn.Module):
    """conv 24 5x5 -> pool -> conv 32 3x3 -> pool -> fc 256 -> fc 10 (valid padding)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 24, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),  # (B, 24, 12, 12)
            nn.Conv2d(24, 32, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),  # (B, 32, 5, 5)
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(32 * 5 * 5, 256), nn.ReLU(), nn.Linear(256, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class SmallCnn(nn.Module):
    """torchkeel's simple_cnn defaults: conv 32 3x3 same -> pool -> conv 64 -> pool -> fc 128 -> out."""

    def __init__(self, channels: int, size: int, classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # (B, 64, size/4, size/4)
        )
        flat = 64 * (size // 4) ** 2
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(flat, 128), nn.ReLU(), nn.Linear(128, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class LstmNet(nn.Module):
    """torchkeel's lstm defaults: embedding 64 -> LSTM 128 over the packed real tokens -> last state -> out."""

    def __init__(self, vocab: int, classes: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, 64, padding_idx=0)
        self.rnn = nn.LSTM(64, 128, batch_first=True)
        self.head = nn.Linear(128, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lengths = (x != 0).sum(1).clamp_min(1)
        packed = pack_padded_sequence(self.embed(x), lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, (h_n, _) = self.rnn(packed)  # (1, B, 128)
        return self.head(h_n[-1])


def build_net(workload: str, x_train: torch.Tensor, y_train: torch.Tensor) -> nn.Module:
    classes = int(y_train.max()) + 1
    if workload == "mnist":
        return MnistNet()
    if workload == "images":
        return SmallCnn(x_train.shape[1], x_train.shape[-1], classes)
    return LstmNet(int(x_train.max()) + 1, classes)


def onecycle(optimizer: torch.optim.Optimizer, total_steps: int) -> torch.optim.lr_scheduler.OneCycleLR:
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=PEAK_LR,
        total_steps=total_steps,
        pct_start=WARMUP,
        div_factor=25,
        final_div_factor=1e4,
        anneal_strategy="cos",
        cycle_momentum=False,
    )


@torch.inference_mode()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> float:
    model.eval()
    device = next(model.parameters()).device
    correct = sum(
        (model(x[i : i + batch].to(device)).argmax(1).cpu() == y[i : i + batch]).sum().item()
        for i in range(0, len(x), batch)
    )
    return correct / len(x)


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if torch.cuda.is_initialized():  # the GPU's queued work is part of the training time
            torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self.start


def report(train_seconds: float, test_accuracy: float, samples: int) -> None:
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(
        json.dumps(
            {
                "train_seconds": train_seconds,
                "test_accuracy": test_accuracy,
                "samples_per_second": samples / train_seconds,
                "peak_rss_mb": peak_mb,
            }
        )
    )
