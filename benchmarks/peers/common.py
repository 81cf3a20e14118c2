"""Shared pieces of the peer workloads: the MNIST data, the network, the schedule, the report.

Every variant script prints one JSON line: train_seconds (the training loop only: after data
loading and model building, before the test pass), test_accuracy, samples_per_second and
peak_rss_mb (the process's peak resident memory).
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch
from torch import nn

BATCH = 128
PEAK_LR = 3e-3  # Adam, peak of the one-cycle schedule
WARMUP = 0.25  # fraction of steps warming up from PEAK_LR / 25


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--root", default="../shared/data", help="folder holding MNIST/raw")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def load_mnist(root: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Real MNIST from IDX files through torchvision: x (N, 1, 28, 28) float normalised."""
    from torchvision.datasets import MNIST

    train, test = MNIST(root, train=True, download=False), MNIST(root, train=False, download=False)
    x_train = train.data.unsqueeze(1).float() / 255.0
    mean, std = x_train.mean().item(), x_train.std().item()
    x_test = test.data.unsqueeze(1).float() / 255.0
    return (x_train - mean) / std, train.targets, (x_test - mean) / std, test.targets


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
    correct = sum((model(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum().item() for i in range(0, len(x), batch))
    return correct / len(x)


class Timer:
    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
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
