"""Measure a `data: {name: mnist}` config on the real MNIST before the MNIST loader exists.

Builds the same DataBundle the loader will (torchvision's IDX files read with
``torchvision.datasets.MNIST(root, download=False)``, scaled to [0, 1], the official 10,000
test images as the test split, a stratified val split from the 60,000, per-channel
normalisation with train statistics) and trains the config's model with its `train`
settings through ``torchkeel.fit`` (or the GAN loop for a GAN). Prints one JSON line per seed.

Usage: python benchmarks/measure_mnist.py CONFIG [--root data] [--seeds 0 1]
                                         [--train-subset N] [--epochs N] [--threads N]
Once the data branch's `mnist` loader is merged, `keel train CONFIG` does the same.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
import yaml

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))

from torchkeel.config import DataConfig, validate_config  # noqa: E402
from torchkeel.data.bundle import DataBundle  # noqa: E402
from torchkeel.data.images import image_bundle  # noqa: E402
from torchkeel.models import GAN_MODELS, build, count_parameters  # noqa: E402


def mnist_bundle(root: str, data: dict, seed: int, subset: int | None) -> DataBundle:
    from torchvision.datasets import MNIST

    train, test = MNIST(root, train=True, download=False), MNIST(root, train=False, download=False)
    x = train.data[:subset].unsqueeze(1).float() / 255.0  # (N, 1, 28, 28) in [0, 1]
    y = train.targets[:subset]
    cfg = DataConfig(val_fraction=data.get("val_fraction", 0.1), augment=data.get("augment", {}))
    test_split = (test.data.unsqueeze(1).float() / 255.0, test.targets)
    bundle = image_bundle("mnist", x, y, [str(c) for c in range(10)], cfg, seed, test=test_split)
    bundle.spec.extra["background"] = "dark"
    return bundle


def measure(raw: dict, data: DataBundle, seed: int) -> dict:
    from torchkeel.train.gan import feature_classifier, fit_gan
    from torchkeel.train.loop import fit

    raw = {**raw, "seed": seed, "data": {"augment": raw.get("data", {}).get("augment", {})}}
    cfg = validate_config(raw)
    torch.manual_seed(seed)
    model = build(cfg.model, data.spec)
    t0 = time.perf_counter()
    if cfg.model.name in GAN_MODELS:
        features, accuracy = feature_classifier(data, cfg)
        run = fit_gan(model, data, cfg, feature_net=features, progress=False)
        frechet = [round(r["frechet"], 2) for r in run.history]
        result = {"frechet_per_epoch": frechet, "frechet_real_vs_real": round(run.frechet_real, 2)}
        result["feature_classifier_accuracy"] = round(accuracy, 4)
    else:
        run = fit(model, data, cfg, progress=False)
        result = {f"test_{k}": round(v, 4) for k, v in run.evaluate("test").items()}
    result |= {"seed": seed, "epochs": cfg.train.epochs, "parameters": count_parameters(model)}
    result |= {"train_seconds": round(run.train_seconds, 1), "process_seconds": round(time.perf_counter() - t0, 1)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path)
    parser.add_argument("--root", default=None, help="MNIST root (default: the config's data.root)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--train-subset", type=int, default=None, help="first N of the 60,000 training images")
    parser.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (train.threads)")
    args = parser.parse_args()
    raw = yaml.safe_load(args.config.read_text())
    data_cfg = raw.pop("data")
    assert data_cfg["name"] == "mnist", "this script measures mnist configs"
    raw.setdefault("train", {})
    if args.epochs:
        raw["train"]["epochs"] = args.epochs
    if args.threads:
        raw["train"]["threads"] = args.threads
    env = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": args.threads or torch.get_num_threads(),
    }
    print(json.dumps({"config": str(args.config), "train_subset": args.train_subset, **env}), flush=True)
    for seed in args.seeds:
        data = mnist_bundle(args.root or data_cfg.get("root", "data"), data_cfg, seed, args.train_subset)
        sizes = {"train": len(data.train), "val": len(data.val or [])}
        print(json.dumps(sizes | measure(raw, data, seed)), flush=True)


if __name__ == "__main__":
    main()
