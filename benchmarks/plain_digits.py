"""The default `keel train` recipe written by hand in plain PyTorch, for benchmarks/overhead.py.

Same data (scikit-learn digits, stratified 70/10/20 split, train-split normalisation), same
network (simple_cnn), same optimiser (AdamW 3e-3, weight decay 0.01 on weights only), same
schedule (one-cycle: 25% linear warmup from lr/25, cosine to 0), batch 32, 12 epochs, a
validation pass per epoch, the test pass at the end.

--loader dataloader: the textbook TensorDataset + DataLoader;
--loader sliced: tensors sliced into batches by a permutation (the hand-optimised loop).
Prints one JSON line: train_seconds, test_accuracy.
"""

import argparse
import json
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--loader", choices=["dataloader", "sliced"], default="sliced")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=12)
    args = parser.parse_args()
    torch.manual_seed(args.seed)

    digits = load_digits()
    x = digits.images.astype(np.float32)[:, None] / 16.0
    y = digits.target
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=0.2, stratify=y, random_state=args.seed)
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=0.125, stratify=y_rest, random_state=args.seed
    )
    mean, std = x_train.mean(), x_train.std()
    t = lambda a: torch.from_numpy((a - mean) / std)  # noqa: E731
    x_train, x_val, x_test = t(x_train), t(x_val), t(x_test)
    y_train, y_val, y_test = (torch.from_numpy(v).long() for v in (y_train, y_val, y_test))

    model = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 2 * 2, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )
    decay = [p for p in model.parameters() if p.ndim >= 2]
    other = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": other, "weight_decay": 0.0}], lr=3e-3)
    batch, epochs = 32, args.epochs
    steps = math.ceil(len(x_train) / batch) * epochs
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt,
        max_lr=3e-3,
        total_steps=steps,
        pct_start=0.25,
        anneal_strategy="cos",
        div_factor=25,
        final_div_factor=1e12,
        cycle_momentum=False,
    )
    loader = DataLoader(TensorDataset(x_train, y_train), batch_size=batch, shuffle=True)

    def batches():
        if args.loader == "dataloader":
            yield from loader
        else:
            perm = torch.randperm(len(x_train))
            for i in range(0, len(perm), batch):
                idx = perm[i : i + batch]
                yield x_train[idx], y_train[idx]

    @torch.inference_mode()
    def accuracy(xs, ys):
        model.eval()
        return (model(xs).argmax(1) == ys).float().mean().item()

    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for xb, yb in batches():
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        accuracy(x_val, y_val)
    train_seconds = time.perf_counter() - start
    print(json.dumps({"train_seconds": train_seconds, "test_accuracy": accuracy(x_test, y_test)}))


if __name__ == "__main__":
    main()
