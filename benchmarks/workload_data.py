"""Data for the speed benchmark's workloads 2 and 3, written in real formats.

images: 32x32 colour PNGs in ``train/<class>/`` and ``test/<class>/`` (CIFAR-10's shape: 10
        classes). Each class is a smooth random colour pattern; a sample is its class pattern
        shifted by up to 3 pixels, at a random contrast, under heavy pixel noise, so a small
        CNN has to learn it over a couple of epochs rather than at the first batch.
cifar10: the real CIFAR-10 (torchvision's files under a root you pass) written out the same
        way, the first ``n_train`` training images and the whole test set.
text:   ``train.csv`` and ``test.csv`` (columns text,label): 4 topics; a text is 20-60 words
        drawn from a Zipf-like vocabulary of 2,000 words, 8% of them from its topic's 40 words.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image


def make_images(folder: Path, n_train: int = 10_000, n_test: int = 2_000, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, size=(10, 4, 4, 3)).astype(np.uint8)
    patterns = np.stack([np.asarray(Image.fromarray(c).resize((38, 38), Image.BICUBIC)) for c in coarse])
    for split, n in (("train", n_train), ("test", n_test)):
        labels = rng.integers(0, 10, size=n)
        for i, label in enumerate(labels):
            dy, dx = rng.integers(0, 7, size=2)
            image = patterns[label, dy : dy + 32, dx : dx + 32].astype(np.float32)  # (32, 32, 3)
            image = 128 + (image - 128) * rng.uniform(0.2, 0.8) + rng.normal(0, 110, size=image.shape)
            out = folder / split / f"class{label}"
            out.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(out / f"{i:05d}.png")
    return folder


def make_text(folder: Path, n_train: int = 8_000, n_test: int = 2_000, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(2000)]
    general = 1.0 / np.arange(1, len(words) + 1)  # Zipf-like word frequencies
    general /= general.sum()
    topics = [rng.choice(len(words), size=40, replace=False) for _ in range(4)]
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        with open(folder / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            for _ in range(n):
                label = int(rng.integers(0, 4))
                length = int(rng.integers(20, 61))
                ids = rng.choice(len(words), size=length, p=general)
                topical = rng.random(length) < 0.08
                ids[topical] = rng.choice(topics[label], size=int(topical.sum()))
                writer.writerow([" ".join(words[i] for i in ids), f"topic{label}"])
    return folder


def export_cifar10(root: str, folder: Path, n_train: int) -> Path:
    from torchvision.datasets import CIFAR10

    for split, train, n in (("train", True, n_train), ("test", False, None)):
        data = CIFAR10(root, train=train, download=False)
        for i, (image, label) in enumerate(zip(data.data[:n], data.targets[:n], strict=True)):
            out = folder / split / data.classes[label]
            out.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(out / f"{i:05d}.png")
    return folder
