"""Spoken digits (FSDD): torchkeel's audio recipe beside a classic baseline, on the official
split and on speaker-disjoint splits.

    python benchmarks/audio.py                       # official split + leave-one-speaker-out for theo, jackson
    python benchmarks/audio.py --speakers george lucas nicolas theo jackson yweweler --seeds 0 1

Rows, on the same files and splits:
- keel: `keel train --data audio_folder` with no model named (the audio recipe: logmel_cnn), or
  the fsdd loader for the official split; test accuracy, wall seconds (load + train + test).
- log-mel stats + LR: the same 40-band log-mel spectrogram (scipy's STFT, 25 ms Hann windows
  every 10 ms, torchkeel's HTK filterbank), each band's mean and std over the clip (80
  numbers), standardised, into scikit-learn's LogisticRegression with C chosen on val.

The official split (takes 0-4 test) has every test speaker in train; leaving a speaker out is
the honest measure of a new voice. Needs data/fsdd/recordings (see data/README.md).
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from torchkeel.config import load_config  # noqa: E402
from torchkeel.data import load  # noqa: E402
from torchkeel.data.audio import read_audio  # noqa: E402
from torchkeel.models import build  # noqa: E402
from torchkeel.models.logmel import mel_filterbank  # noqa: E402
from torchkeel.train.loop import fit  # noqa: E402

NAME = re.compile(r"^(\d)_([a-z]+)_(\d+)\.wav$")
RATE = 8000


def keel_accuracy(sets: list[str], data: dict, seed: int, threads: int) -> tuple[float, float, int]:
    start = time.perf_counter()
    cfg = load_config(None, [f"train.threads={threads}", "eval.report=false", *sets], {**data, "seed": seed})
    bundle = load(cfg.data, cfg.seed)
    run = fit(build(cfg.model, bundle.spec), bundle, cfg, progress=False)
    run.model.eval()
    with torch.no_grad():
        pred = torch.cat([run.model(x).argmax(1) for x in bundle.test.x.split(256)])
    accuracy = float((pred == bundle.test.y).float().mean())
    return accuracy, time.perf_counter() - start, len(run.history)


def logmel_stats(path: Path) -> np.ndarray:
    from scipy.signal import stft

    wave, _ = read_audio(path, RATE)
    _, _, spec = stft(wave, RATE, window="hann", nperseg=200, noverlap=120, nfft=256, boundary="zeros")
    mel = mel_filterbank(40, 256, RATE).numpy() @ np.abs(spec) ** 2
    logmel = np.log(mel + mel.max() * 1e-8 + 1e-12)
    return np.concatenate([logmel.mean(1), logmel.std(1)])


def baseline_accuracy(feats: np.ndarray, y: np.ndarray, parts: dict[str, np.ndarray], seed: int) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scale = StandardScaler().fit(feats[parts["train"]])
    x = {k: scale.transform(feats[v]) for k, v in parts.items()}
    best = None
    for c in (0.01, 0.1, 1.0, 10.0):
        model = LogisticRegression(C=c, max_iter=3000, random_state=seed).fit(x["train"], y[parts["train"]])
        score = model.score(x["val"], y[parts["val"]])
        if best is None or score > best[0]:
            best = (score, model)
    return float(best[1].score(x["test"], y[parts["test"]]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT / "data" / "fsdd" / "recordings")
    parser.add_argument("--speakers", nargs="*", default=["theo", "jackson"], help="leave each out in turn")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-official", action="store_true", help="only the speakers left out")
    args = parser.parse_args()
    files = sorted(p for p in args.root.iterdir() if NAME.match(p.name))
    meta = [NAME.match(p.name).groups() for p in files]  # type: ignore[union-attr]
    y = np.array([int(d) for d, _, _ in meta])
    speakers = np.array([s for _, s, _ in meta])
    print(f"{len(files)} clips, speakers {sorted(set(speakers))}; features for the baseline ...", flush=True)
    feats = np.stack([logmel_stats(p) for p in files])
    rows = []
    for seed in args.seeds:
        rng = np.random.default_rng(seed)
        # official: takes 0-4 test; val 300 of the rest, as the fsdd loader draws it (stratified by digit)
        take = np.array([int(t) for _, _, t in meta])
        rest = rng.permutation(np.flatnonzero(take >= 5))
        parts = {"test": np.flatnonzero(take < 5), "val": rest[:300], "train": rest[300:]}
        if not args.no_official:
            sets = [f"data.root={args.root}"]
            acc, seconds, epochs = keel_accuracy(sets, {"data.name": "fsdd"}, seed, args.threads)
            rows.append(("official (takes 0-4)", seed, acc, seconds, epochs, baseline_accuracy(feats, y, parts, seed)))
            print(rows[-1], flush=True)
        for speaker in args.speakers:
            out = speakers == speaker
            rest = rng.permutation(np.flatnonzero(~out))
            parts = {"test": np.flatnonzero(out), "val": rest[: len(rest) // 9], "train": rest[len(rest) // 9 :]}
            with tempfile.TemporaryDirectory() as tmp:
                csv = Path(tmp) / "clips.csv"
                lines = ["file,label,split"] + [
                    f"{f},{d},{'test' if s == speaker else 'train'}" for f, (d, s, _) in zip(files, meta, strict=True)
                ]
                csv.write_text("\n".join(lines) + "\n")
                sets = [f"data.path={csv}", "data.val_fraction=0.1"]
                acc, seconds, epochs = keel_accuracy(sets, {"data.name": "audio_folder"}, seed, args.threads)
            rows.append((f"{speaker} left out", seed, acc, seconds, epochs, baseline_accuracy(feats, y, parts, seed)))
            print(rows[-1], flush=True)
    print("\n| split | seed | keel (audio recipe) | wall s | epochs | log-mel stats + LR |")
    print("|---|---|---|---|---|---|")
    for split, seed, acc, seconds, epochs, base in rows:
        print(f"| {split} | {seed} | {acc:.4f} | {seconds:.0f} | {epochs} | {base:.4f} |")


if __name__ == "__main__":
    main()
