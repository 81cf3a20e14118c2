"""Audio speed: torchkeel's training loop against a plain PyTorch loop on the same clips and
network, and its batched log-mel front end against a per-file librosa loop.

    python benchmarks/audio_speed.py                      # FSDD, 3 rounds of 3 epochs each side
    python benchmarks/audio_speed.py --rounds 5 --epochs 2

1. Training throughput, in seconds of recorded sound (true lengths) trained on per second:
   `keel train --data fsdd --model logmel_cnn` (the official split's takes 5-49 as train, no
   val, the whole command's summary.json train_seconds: its loop with checkpoints and logging)
   against benchmarks/peers/audio_plain.py (the same network from torchkeel.models, AdamW and
   one-cycle at the same peak rate and weight decay, a textbook loop; torch's OneCycleLR
   where keel has its own one-cycle, which changes no speed), each in its own process on
   --device, interleaved, medians.
2. Features for all 3,000 clips from waveforms already in memory: torchkeel's LogMel (STFT,
   HTK mel filterbank, log, per-clip normalisation) on padded batches of 256, against a loop
   of librosa.feature.melspectrogram + power_to_db per clip at the same settings (25 ms Hann
   windows every 10 ms, 256-point FFT, 40 HTK mel bands without area normalisation). On this
   machine both run on its CPU cores; with a GPU, torchkeel's also runs there (--device cuda).

Needs data/fsdd/recordings (see data/README.md) and librosa (the bench extra).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import safetensors.torch
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from torchkeel.config_data import DataConfig  # noqa: E402
from torchkeel.data import load  # noqa: E402
from torchkeel.models.logmel import LogMel  # noqa: E402

RATE = 8000


def keel_round(root: Path, epochs: int, threads: int, device: str, cwd: Path) -> float:
    sets = {
        "train.device": device,
        "data.root": root,
        "data.val_fraction": 0,
        "train.epochs": epochs,
        "train.batch_size": 64,
        "train.optimizer.name": "adamw",
        "train.optimizer.lr": 3e-3,
        "train.optimizer.weight_decay": 0.01,
        "train.schedule.name": "onecycle",
        "train.threads": threads,
        "eval.report": "false",
    }
    args = [sys.executable, "-m", "torchkeel", "train", "--data", "fsdd", "--model", "logmel_cnn", "--quiet"]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    subprocess.run(args, cwd=cwd, env=env, check=True, capture_output=True, text=True)
    summary = json.loads((cwd / "runs" / "latest" / "summary.json").read_text())
    return float(summary["train_seconds"])


def plain_round(data: Path, epochs: int, threads: int, device: str) -> float:
    script = ROOT / "benchmarks" / "peers" / "audio_plain.py"
    args = [sys.executable, str(script), "--data", str(data), "--epochs", str(epochs), "--threads", str(threads)]
    args += ["--device", device]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return float(json.loads(out.splitlines()[-1])["train_seconds"])


def features(clips: list[np.ndarray], device: str, threads: int) -> tuple[float, float]:
    """(seconds for torchkeel's LogMel over all clips, seconds for librosa's per-clip loop)."""
    import librosa

    from torchkeel.data.audio import pad_clips

    torch.set_num_threads(threads)
    x = pad_clips(clips, max(len(c) for c in clips))
    front = LogMel(RATE, spec_augment=False).eval().to(device)
    with torch.no_grad():
        front(x[:256].to(device))  # warm-up: kernels, caches
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for batch in x.split(256):
            front(batch.to(device))
        if device == "cuda":
            torch.cuda.synchronize()
        ours = time.perf_counter() - start
    start = time.perf_counter()
    for clip in clips:
        power = librosa.feature.melspectrogram(
            y=clip, sr=RATE, n_fft=256, hop_length=80, win_length=200, window="hann", center=True,
            pad_mode="constant", power=2.0, n_mels=40, htk=True, norm=None,
        )  # fmt: skip
        librosa.power_to_db(power, ref=np.max, top_db=80.0)
    return ours, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT / "data" / "fsdd" / "recordings")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    bundle = load(DataConfig(name="fsdd", root=str(args.root), val_fraction=0.0), seed=0)
    train_audio = float(bundle.train.x[:, 1].sum()) / RATE
    print(f"fsdd: {len(bundle.train)} train clips, {train_audio:.0f} s of sound; {len(bundle.test)} test", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "clips.safetensors"
        tensors = {"x_train": bundle.train.x, "y_train": bundle.train.y, "x_test": bundle.test.x}
        safetensors.torch.save_file({**tensors, "y_test": bundle.test.y}, data)
        keel_s, plain_s = [], []
        for r in range(args.rounds):
            keel_s.append(keel_round(args.root, args.epochs, args.threads, args.device, Path(tmp)))
            plain_s.append(plain_round(data, args.epochs, args.threads, args.device))
            print(f"round {r}: keel {keel_s[-1]:.1f} s, plain {plain_s[-1]:.1f} s", flush=True)
    k, p = statistics.median(keel_s), statistics.median(plain_s)
    per = train_audio * args.epochs
    from torchkeel.data.audio import read_audio

    files = sorted(args.root.glob("*.wav"))
    clips = [read_audio(f, RATE)[0] for f in files]
    ours, theirs = features(clips, args.device, args.threads)
    seconds = sum(len(c) for c in clips) / RATE
    print(f"\ntraining, {args.epochs} epochs x {args.rounds} rounds (medians), {args.threads} threads")
    print("| loop | train s | seconds of audio per second | ratio to plain |")
    print("|---|---|---|---|")
    print(f"| torchkeel (keel train) | {k:.1f} | {per / k:.0f} | {p / k:.2f} |")
    print(f"| plain PyTorch (peers/audio_plain.py) | {p:.1f} | {per / p:.0f} | 1.00 |")
    print(f"\nfeatures of {len(clips)} clips ({seconds:.0f} s of sound)")
    print("| front end | seconds | clips per second | speed-up |")
    print("|---|---|---|---|")
    speed = f"{ours:.2f} | {len(clips) / ours:.0f} | {theirs / ours:.1f}x"
    print(f"| torchkeel LogMel, batches of 256 ({args.device}) | {speed} |")
    print(f"| librosa, per file | {theirs:.2f} | {len(clips) / theirs:.0f} | 1.0x |")


if __name__ == "__main__":
    main()
