"""The speed benchmark: the same workloads through torchkeel and its peers, one table out.

Usage: python benchmarks/speed.py [--rounds 3] [--workloads mnist images text predict]
                                  [--features] [--root data] [--cifar-root DIR] [--epochs 2]
                                  [--device cpu|cuda]

Per workload every variant runs in its own process, ROUNDS times, interleaved (the order
rotates each round, so a busy spell of the machine hits every variant alike). Per variant:
training time (the loop only, as each script reports it) and whole-process wall time, median
(min-max); images (samples) per second; test accuracy (mean); peak resident memory of the
process (from wait4's rusage); and each variant's training time divided by torchkeel's (> 1:
torchkeel is faster). Variants:
  textbook   plain PyTorch, TensorDataset + DataLoader (peers/textbook.py)
  sliced     plain PyTorch, hand-optimised: tensors sliced into batches, channels_last (peers/sliced.py)
  lightning  PyTorch Lightning's Trainer, fp32 defaults (peers/lightning_fit.py)
  keras      Keras 3 on the torch backend, model.fit (peers/keras_fit.py)
  torchkeel  `keel train` on the same data, network and recipe
Workloads:
  mnist    (1) conv 24 5x5, pool, conv 32 3x3, pool, fc 256, fc 10; Adam + one-cycle; batch 128;
           real MNIST under --root (skipped with a message when absent)
  images   (2) simple_cnn on 32x32 colour PNGs: the first 5,000 CIFAR-10 training images and its
           test set when --cifar-root is given, else generated ones (benchmarks/workload_data.py)
  text     (3) an LSTM classifier on generated text (CSV)
  predict  (4) inference throughput: plain torch vs torchkeel's Predictor vs `keel predict`
With --features, workload (1) also runs torchkeel with each engine feature switched
(channels_last off, bf16 autocast, torch.compile, fused/foreach Adam, one thread, glibc's
allocator defaults instead of train.allocator: retain).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PEERS = HERE / "peers"
sys.path.insert(0, str(HERE))

from workload_data import export_cifar10, make_images, make_text  # noqa: E402

IMAGES_TRAIN = 5_000  # generated 32x32 colour training images (2,000 test)
TEXTS_TRAIN = 4_000  # generated training texts (2,000 test)
PEER_SCRIPTS = {
    "textbook": "textbook.py",
    "sliced": "sliced.py",
    "lightning": "lightning_fit.py",
    "keras": "keras_fit.py",
}
# torchkeel with one engine feature switched, on workload (1): name -> --set overrides
FEATURES = {
    "torchkeel, NCHW (channels_last off)": ["train.channels_last=false"],
    "torchkeel, bf16 autocast": ["train.precision=bf16"],
    "torchkeel, torch.compile": ["train.compile=true"],
    "torchkeel, fused Adam": ["train.optimizer.implementation=fused"],
    "torchkeel, foreach Adam": ["train.optimizer.implementation=foreach"],
    "torchkeel, 1 thread": ["train.threads=1"],
    "torchkeel, glibc's allocator defaults": ["train.allocator=system"],
}


@dataclass
class Workload:
    name: str
    peer_data: str  # --data of the peer scripts
    config: dict  # the torchkeel config of the same job
    samples: int = 0
    variants: dict = field(default_factory=dict)  # name -> function(seed, tmp) -> result dict


def keel_config(workload: str, data: dict, model: dict, epochs: int, batch: int, device: str = "cpu") -> dict:
    """The peers' recipe as a torchkeel config: Adam 3e-3 peak, one-cycle, no validation pass."""
    return {
        "name": f"speed-{workload}",
        "data": {"val_fraction": 0.0, **data},
        "model": model,
        "train": {
            "epochs": epochs,
            "batch_size": batch,
            "optimizer": {"name": "adam", "lr": 3.0e-3, "weight_decay": 0.0},
            "schedule": {"name": "onecycle"},
            "channels_last": model["name"] == "simple_cnn",
            "log_every": 50,
            "device": device,
        },
        "eval": {"metrics": ["accuracy"]},
    }


def workloads(args: argparse.Namespace, tmp: Path) -> list[Workload]:
    found = []
    if "mnist" in args.workloads:
        if (Path(args.root) / "MNIST" / "raw").is_dir():
            model = {"name": "simple_cnn", "channels": [24, 32], "kernels": [5, 3], "padding": "valid", "hidden": 256}
            data = {"name": "mnist", "root": str(Path(args.root).resolve())}
            found.append(Workload("mnist", args.root, keel_config("mnist", data, model, args.epochs, 128, args.device)))
        else:
            print(f"workload mnist skipped: no MNIST/raw under {args.root} (pass --root)", file=sys.stderr)
    if "images" in args.workloads:
        if args.cifar_root:  # the real CIFAR-10, written as PNG folders every variant reads alike
            folder = export_cifar10(args.cifar_root, tmp / "images", IMAGES_TRAIN)
        else:
            folder = make_images(tmp / "images", IMAGES_TRAIN)
        data = {"name": "image_folder", "root": str(folder), "augment": {"flip": False}}
        found.append(
            Workload(
                "images",
                str(folder),
                keel_config("images", data, {"name": "simple_cnn"}, args.epochs, 128, args.device),
            )
        )
    if "text" in args.workloads:
        folder = make_text(tmp / "text", TEXTS_TRAIN)
        data = {
            "name": "text_csv",
            "path": str(folder / "train.csv"),
            "test_path": str(folder / "test.csv"),
            "target": "label",
            "text": {"tokenizer": "word", "max_length": 64},
        }
        found.append(
            Workload("text", str(folder), keel_config("text", data, {"name": "lstm"}, args.epochs, 64, args.device))
        )
    return found


def run_process(cmd: list[str], cwd: Path = REPO) -> tuple[str, float, float, float]:
    """Run ``cmd``; return its stdout, whole-process wall seconds, peak RSS in MB and CPU
    seconds (user + system), the last two from wait4's rusage of that one child."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=cwd, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err.read()[-3000:]}")
        return out.read(), wall, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime  # maxrss: KiB on Linux


def run_peer(script: str, work: Workload, seed: int, epochs: int) -> dict:
    cmd = [sys.executable, str(PEERS / script), "--workload", work.name, "--data", work.peer_data]
    cmd += ["--device", work.config["train"]["device"]]
    stdout, wall, rss, cpu = run_process([*cmd, "--epochs", str(epochs), "--seed", str(seed)])
    result = json.loads(stdout.strip().splitlines()[-1])
    return {"train": result["train_seconds"], "wall": wall, "cpu": cpu, "accuracy": result["test_accuracy"], "rss": rss}


def run_keel(work: Workload, seed: int, tmp: Path, overrides: list[str]) -> dict:
    config = tmp / f"{work.name}.yaml"
    config.write_text(yaml.safe_dump(work.config))
    with tempfile.TemporaryDirectory(dir=tmp) as out:
        sets = [a for o in overrides for a in ("--set", o)]
        cmd = [sys.executable, "-m", "torchkeel", "train", str(config), "-q", "--seed", str(seed), "--out-dir", out]
        _, wall, rss, cpu = run_process([*cmd, *sets])
        run = next(Path(out).glob("2*/summary.json")).parent  # the run folder, not the "latest" link
        summary = json.loads((run / "summary.json").read_text())
        if work.name == "mnist" and seed == 0 and not overrides:
            keep = tmp / "mnist-run"  # workload (4) serves this trained model
            if not keep.exists():
                run.rename(keep)
    result = {"train": summary["train_seconds"], "wall": wall, "cpu": cpu, "accuracy": summary["test"]["accuracy"]}
    result["rss"] = rss
    if "compile_seconds" in summary:
        result["compile"] = summary["compile_seconds"]
    return result


def run_workload(work: Workload, args: argparse.Namespace, tmp: Path) -> dict[str, list[dict]]:
    variants = {"torchkeel": lambda s: run_keel(work, s, tmp, [])}
    for name, script in PEER_SCRIPTS.items():
        if name in args.peers:
            variants[name] = lambda s, script=script: run_peer(script, work, s, args.epochs)
    if args.features and work.name == "mnist":
        for name, overrides in FEATURES.items():
            variants[name] = lambda s, o=overrides: run_keel(work, s, tmp, o)
    return interleave(variants, args.rounds, work.name)


def interleave(variants: dict, rounds: int, label: str) -> dict[str, list[dict]]:
    results: dict[str, list[dict]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(rounds):  # order rotated each round: noise hits every variant alike
        for name in names[r % len(names) :] + names[: r % len(names)]:
            try:
                results[name].append(variants[name](r))
            except RuntimeError as e:  # one variant failing (a peer not installed) leaves the others' figures
                print(f"{label}: {name} failed: {e}", file=sys.stderr)
        print(f"{label}: round {r + 1}/{rounds} done", file=sys.stderr)
    return {name: rows for name, rows in results.items() if rows}


def _stat(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def print_table(title: str, results: dict[str, list[dict]], samples: int) -> None:
    """One row per variant; the ratios divide each variant's median by torchkeel's (> 1: we are faster).
    On a busy machine the CPU time (user + system) of the whole process is the steadier figure."""
    ours = {k: statistics.median(x[k] for x in results["torchkeel"]) for k in ("train", "cpu")}
    print(f"\n### {title}\n")
    print(
        "| variant | train s | process s | process CPU s | samples/s | test acc | peak RSS MB "
        "| train s / torchkeel's | CPU s / torchkeel's |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, rows in results.items():
        train, cpu = [x["train"] for x in rows], [x["cpu"] for x in rows]
        extra = f" (first step, compiling: {_stat([x['compile'] for x in rows])})" if "compile" in rows[0] else ""
        print(
            f"| {name} | {_stat(train)}{extra} | {_stat([x['wall'] for x in rows])} | {_stat(cpu)} | "
            f"{samples / statistics.median(train):,.0f} | {statistics.mean(x['accuracy'] for x in rows):.4f} | "
            f"{statistics.median(x['rss'] for x in rows):,.0f} | {statistics.median(train) / ours['train']:.2f} | "
            f"{statistics.median(cpu) / ours['cpu']:.2f} |"
        )


def machine_line(args: argparse.Namespace) -> str:
    import torch

    versions = [f"torch {torch.__version__}", f"python {platform.python_version()}"]
    os.environ.setdefault("KERAS_BACKEND", "torch")  # as peers/keras_fit.py runs it
    for module in ("lightning", "keras"):
        try:
            versions.append(f"{module} {__import__(module).__version__}")
        except ImportError:
            versions.append(f"{module} not installed")
    cpu = torch.backends.cpu.get_cpu_capability()
    if args.device.startswith("cuda"):
        versions.append(f"on {torch.cuda.get_device_name(0)}")
    return (
        f"# {platform.machine()} {os.cpu_count()} CPUs ({cpu}), {', '.join(versions)}; "
        f"{args.rounds} interleaved rounds, seeds 0-{args.rounds - 1}, {args.epochs} epochs"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workloads", nargs="+", default=["mnist", "images", "text", "predict"])
    parser.add_argument("--peers", nargs="+", default=list(PEER_SCRIPTS), help="peer variants to run")
    parser.add_argument("--features", action="store_true", help="also torchkeel's engine features on/off (mnist)")
    parser.add_argument("--root", default=str(REPO / "data"), help="folder holding MNIST/raw")
    parser.add_argument("--cifar-root", default=None, help="folder holding cifar-10-batches-py (else generated images)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda: every variant trains there (keras: its own)")
    return parser


def main() -> None:
    args = build_parser().parse_args()
    samples = {"mnist": 60_000, "images": IMAGES_TRAIN, "text": TEXTS_TRAIN}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for work in workloads(args, tmp):
            results = run_workload(work, args, tmp)
            print(machine_line(args))
            print_table(f"workload {work.name}", results, samples[work.name] * args.epochs)
            sys.stdout.flush()
        if "predict" in args.workloads:
            from predict_speed import run_predict

            run_predict(tmp / "mnist-run", str(Path(args.root).resolve()), args.rounds, run_process)


if __name__ == "__main__":
    main()
