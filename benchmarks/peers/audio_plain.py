"""A plain PyTorch loop over sound clips: the audio peer of benchmarks/audio_speed.py.

It trains the same network torchkeel builds for `--model logmel_cnn` (log-mel front end
computed in the model, the CNN after it; taken from torchkeel.models so the two sides run the
same arithmetic) on the same waveform tensors, with the textbook loop: a random permutation
sliced into batches, AdamW, one-cycle, nothing else (no validation, checkpoints, logging or
progress bar). Prints one JSON line: train_seconds, audio_seconds_per_second (seconds of
recorded sound, true lengths, trained on per second of the loop), test_accuracy.

    python benchmarks/peers/audio_plain.py --data clips.safetensors --epochs 3
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

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from torchkeel.data.bundle import DataSpec  # noqa: E402
from torchkeel.models import build  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="x_train, y_train, x_test, y_test; rate in the name")
    parser.add_argument("--rate", type=int, default=8000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t = safetensors.torch.load_file(args.data)
    x, y = t["x_train"].to(args.device), t["y_train"].to(args.device)  # the whole set on the device
    classes = [str(c) for c in range(int(y.max()) + 1)]
    spec = DataSpec("clips", "audio", "classification", tuple(x.shape[1:]), classes, extra={"sample_rate": args.rate})
    model = build({"name": "logmel_cnn"}, spec).to(args.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    steps = -(-len(x) // args.batch) * args.epochs
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, args.lr, total_steps=steps)
    start = time.perf_counter()
    for _ in range(args.epochs):
        model.train()
        perm = torch.randperm(len(x), device=x.device)
        for i in range(0, len(x), args.batch):
            idx = perm[i : i + args.batch]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    if x.is_cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(b.to(args.device)).argmax(1).cpu() for b in t["x_test"].split(256)])
    audio = float(x[:, 1].sum()) / args.rate * args.epochs
    print(
        json.dumps(
            {
                "train_seconds": seconds,
                "audio_seconds_per_second": audio / seconds,
                "test_accuracy": float((pred == t["y_test"]).float().mean()),
            }
        )
    )


if __name__ == "__main__":
    main()
