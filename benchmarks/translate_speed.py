"""Translation speed: torchkeel's training loop against a plain nn.Transformer script on the same
token ids, and decoding speed (greedy and beam 5, with and without the KV cache).

    python benchmarks/translate_speed.py                     # Multi30k de->en, 3 rounds, 2 threads
    python benchmarks/translate_speed.py --run runs/latest   # decode with a trained run's model
    python benchmarks/translate_speed.py --quick             # smoke test: a few steps, 20 sentences

1. Training throughput, in real target tokens per second (the tokens the loss is over: EOS
   counted, BOS and padding not). The data is loaded once with torchkeel.data.load (the
   preset's byte-level BPE, 8,000 joint tokens) and the same sentences drawn for both sides:
   --warmup * 128 for untimed warm-up steps, then --steps * 128 timed. torchkeel:
   ``torchkeel.fit`` with configs/multi30k-de-en.yaml's model, batch size, optimiser, schedule,
   label smoothing and clipping, one epoch over the warm-up sentences, then one over the timed
   ones (``Run.train_seconds``: its loop with length-bucketed batches, data/pairs_loader.py;
   the timed sentences are bucketed among themselves into --steps batches, coarser buckets than
   an epoch's 227 on Multi30k and far coarser under --quick's 3: the fill column shows it).
   Plain: benchmarks/peers/seq2seq_plain.py, ``nn.Transformer`` of the same sizes on the same
   ids, random batches of 128 padded to their longest. Each side in its own process (fit sets
   process-wide state, e.g. glibc's allocator), at --threads, bf16 autocast on both when the
   CPU has AVX512-BF16; interleaved, the order alternating, --rounds rounds, medians (min-max).
   The target is keel/plain >= 1.2.
2. Decoding: sentences per second translating the first --sentences test sentences in batches
   of the preset's eval.batch_size, model in eval mode, at --threads, after a warm-up batch:
   greedy and beam 5, each with and without the KV cache (``Decoding(cache=False)`` runs the
   whole prefix again at every step), with how many translations match the cached ones. An
   untrained model (the default) babbles until the length limit (1.5 x source + 10 tokens),
   the slowest case, and beam 5 without the cache then takes minutes; ``--run RUN_DIR`` decodes
   with a trained run's model (the data is then tokenised with the run's tokenisers).

Needs data/multi30k (see data/README.md), or --data naming a folder of NAME.de/NAME.en files
or a TSV file whose header row is ``de<TAB>en``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NoReturn

import safetensors.torch
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from torchkeel.config import RunConfig, load_config, load_raw, validate_config  # noqa: E402
from torchkeel.data import DataBundle, load  # noqa: E402
from torchkeel.data.bundle import DataSpec  # noqa: E402
from torchkeel.data.pairs_loader import LengthBatchLoader, PairSplit  # noqa: E402
from torchkeel.errors import KeelError  # noqa: E402
from torchkeel.generation.seq2seq import output_limits  # noqa: E402

CONFIG = ROOT / "configs" / "multi30k-de-en.yaml"
PEER = ROOT / "benchmarks" / "peers" / "seq2seq_plain.py"
PAD = 0
BEAMS = (1, 5)


# ---- data: the preset's data section pointed at --data, loaded once
def bench_config(data: Path) -> RunConfig:
    """The preset with data.root (a folder) or data.path (a file) set to ``data``."""
    raw = load_raw(CONFIG)
    raw["data"]["root"], raw["data"]["path"] = (str(data), None) if data.is_dir() else (None, str(data))
    return validate_config(raw)


def draw_sentences(split: PairSplit, warmup: int, steps: int, batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """``warmup * batch`` training sentences for the warm-up steps and ``steps * batch`` others for
    the timed ones (a small set is cycled through again), each set cut to its longest sentence."""
    need = (warmup + steps) * batch
    g = torch.Generator().manual_seed(seed)
    order = torch.cat([torch.randperm(len(split), generator=g) for _ in range(-(-need // len(split)))])
    parts = {"warmup": order[: warmup * batch], "timed": order[warmup * batch : need]}
    out = {}
    for name, index in parts.items():
        x, y = split.x[index], split.y[index]
        out[f"x_{name}"] = x[:, : int((x != PAD).sum(1).max())].contiguous()
        out[f"y_{name}"] = y[:, : int((y != PAD).sum(1).max())].contiguous()
    return out


def target_tokens(y: torch.Tensor) -> int:
    """Real target tokens the loss is over: after BOS, EOS included, padding not."""
    return int((y[:, 1:] != PAD).sum())


# ---- 1. training: torchkeel's side (run in a child process, as the peer is)
def keel_throughput(
    spec: DataSpec, tensors: dict[str, torch.Tensor], *, threads: int, bf16: bool, seed: int = 0
) -> dict[str, float]:
    """torchkeel.fit over the warm-up sentences, then (timed) over the others: the JSON's numbers."""
    import torchkeel
    from torchkeel.models import build

    cfg = load_config(CONFIG)  # the preset's model and train sections; the data comes as tensors
    torch.manual_seed(seed)
    model = build(cfg.model, spec)
    options = {"epochs": 1, "threads": threads, "precision": "bf16" if bf16 else "fp32", "seed": seed}
    for part in ("warmup", "timed"):
        split = PairSplit(tensors[f"x_{part}"], tensors[f"y_{part}"])
        bundle = DataBundle(spec, split, None, split)
        run = torchkeel.fit(model, bundle, cfg, progress=False, **options)
    loader = LengthBatchLoader(split, cfg.train.batch_size, seed=seed)  # the batches fit's loader made
    padded = sum(x.numel() + y.numel() for x, y in loader.epoch(0))
    tokens = target_tokens(split.y)
    return {
        "train_seconds": run.train_seconds,
        "steps": run.history[-1]["step"],
        "target_tokens": tokens,
        "tokens_per_second": tokens / run.train_seconds,
        "fill": (int((split.x != PAD).sum()) + int((split.y != PAD).sum())) / padded,
        "loss": run.history[-1]["train/loss"],
    }


def save_inputs(folder: Path, spec: DataSpec, tensors: dict[str, torch.Tensor]) -> Path:
    safetensors.torch.save_file(tensors, folder / "pairs.safetensors")
    (folder / "spec.json").write_text(json.dumps(spec.to_dict()), encoding="utf-8")
    return folder


def keel_child(folder: Path, threads: int, bf16: bool, seed: int) -> None:
    """--keel-child: one keel measurement in this process, printed as one JSON line."""
    spec = DataSpec.from_dict(json.loads((folder / "spec.json").read_text(encoding="utf-8")))
    tensors = safetensors.torch.load_file(folder / "pairs.safetensors")
    print(json.dumps(keel_throughput(spec, tensors, threads=threads, bf16=bf16, seed=seed)), flush=True)


def measure(side: str, folder: Path, spec: DataSpec, batch: int, threads: int, bf16: bool, seed: int) -> dict:
    """One side's measurement in a fresh process: the JSON line it prints."""
    if side == "keel":
        cmd = [sys.executable, __file__, "--keel-child", str(folder)]
    else:
        cmd = [sys.executable, str(PEER), "--tensors", str(folder / "pairs.safetensors")]
        cmd += ["--vocab", str(spec.extra["target_vocab_size"]), "--batch", str(batch)]
    cmd += ["--threads", str(threads), "--seed", str(seed)] + (["--bf16"] if bf16 else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{side} side failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def head_to_head(folder: Path, spec: DataSpec, batch: int, args: argparse.Namespace, bf16: bool) -> dict:
    rows: dict[str, list[dict]] = {"keel": [], "plain": []}
    for r in range(args.rounds):  # interleaved, the order alternating, so drifts in load hit both
        for side in ("keel", "plain") if r % 2 == 0 else ("plain", "keel"):
            rows[side].append(measure(side, folder, spec, batch, args.threads, bf16, seed=r))
            m = rows[side][-1]
            print(f"round {r} {side:5s}: {m['steps']} steps in {m['train_seconds']:.2f} s, "
                  f"{m['tokens_per_second']:,.0f} target tokens/s, fill {m['fill']:.2f}, loss {m['loss']:.3f}",
                  flush=True)  # fmt: skip
    return rows


# ---- 2. decoding
@torch.inference_mode()
def decoding_speed(model: torch.nn.Module, src: torch.Tensor, batch: int, threads: int) -> list[dict]:
    """Sentences/s of greedy and beam 5, with and without the KV cache, on ``src`` (N, S)."""
    torch.set_num_threads(threads)
    model.eval()
    base, rows, cached = model.decoding, [], {}
    limits = output_limits(model.encode(src), base) - 1  # target tokens before the forced EOS
    try:
        for beam in BEAMS:
            for cache in (True, False):
                model.decoding = dataclasses.replace(base, beam=beam, cache=cache)
                model(src[: min(8, len(src))])  # warm-up: kernels, allocator
                start = time.perf_counter()
                outs = [model(b) for b in src.split(batch)]
                seconds = time.perf_counter() - start
                lengths = torch.cat([(o != PAD).sum(1) for o in outs])
                rows.append({"beam": beam, "cache": cache, "seconds": seconds, "sentences_per_second":
                             len(src) / seconds, "tokens_per_sentence": float(lengths.float().mean())})  # fmt: skip
                if cache:
                    cached[beam] = outs
                else:  # the same translations as with the cache?
                    rows[-1]["same"] = sum(_same_rows(a, b) for a, b in zip(outs, cached[beam], strict=True))
    finally:
        model.decoding = base
    for row in rows:
        row["limit"] = float(limits.float().mean())
    return rows


def _same_rows(a: torch.Tensor, b: torch.Tensor) -> int:
    width = max(a.shape[1], b.shape[1])
    a, b = (torch.nn.functional.pad(t, (0, width - t.shape[1])) for t in (a, b))
    return int((a == b).all(1).sum())


def decoding_model(cfg: RunConfig, run: Path | None) -> tuple[torch.nn.Module, DataBundle, str]:
    """The model to decode with, the data tokenised as it expects, and which model it is."""
    from torchkeel.models import build
    from torchkeel.run_model import load_model

    if run is None:
        bundle = load(cfg.data, cfg.seed)
        torch.manual_seed(0)
        what = "untrained (random weights: translations babble until the length limit)"
        return build(cfg.model, bundle.spec).eval(), bundle, what
    model, spec, _ = load_model(run, "cpu")  # (model in eval mode, its DataSpec, model.json)
    if spec.task != "translation":
        raise KeelError(f"--run {run}: a {spec.task} run, not a translation one")
    bundle = load(cfg.data, cfg.seed, fitted=spec)  # the run's tokenisers, not new ones
    return model, bundle, f"trained, from {run}"


# ---- the report
def spread(values: list[float], fmt: str = ",.0f") -> str:
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def training_table(rows: dict[str, list[dict]], args: argparse.Namespace, precision: str, batch: int) -> float:
    k = statistics.median(r["tokens_per_second"] for r in rows["keel"])
    p = statistics.median(r["tokens_per_second"] for r in rows["plain"])
    steps, tokens = rows["keel"][0]["steps"], rows["keel"][0]["target_tokens"]
    print(f"\ntraining: {steps} steps of {batch} sentences ({tokens:,} target tokens) after {args.warmup} warm-up "
          f"step(s), {args.rounds} round(s) (medians, min-max), {args.threads} threads, {precision}")  # fmt: skip
    print("| loop | train s | target tokens/s | fill | ratio to plain |")
    print("|---|---|---|---|---|")
    for name, side, ratio in (
        ("torchkeel (`torchkeel.fit`, length-bucketed batches)", "keel", k / p),
        ("plain PyTorch `nn.Transformer` (peers/seq2seq_plain.py, random batches)", "plain", 1.0),
    ):
        r = rows[side]
        seconds = spread([x["train_seconds"] for x in r], ".2f")
        fill = statistics.median(x["fill"] for x in r)
        print(f"| {name} | {seconds} | {spread([x['tokens_per_second'] for x in r])} | {fill:.2f} | {ratio:.2f} |")
    verdict = "--quick: a smoke test, not a measurement" if args.quick else "met" if k / p >= 1.2 else "not met"
    print(f"\nkeel/plain: {k / p:.2f} (target >= 1.2: {verdict})")
    return k / p


def decoding_table(rows: list[dict], n: int, what: str, threads: int) -> None:
    print(f"\ndecoding {n} test sentences, model {what}; {threads} threads; "
          f"mean length limit {rows[0]['limit']:.1f} tokens")  # fmt: skip
    print("| decoding | KV cache | seconds | sentences/s | tokens per sentence | same as cached |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        name = "greedy" if r["beam"] == 1 else f"beam {r['beam']}"
        same = f"{r['same']}/{n}" if "same" in r else "-"
        cells = f"{r['seconds']:.2f} | {r['sentences_per_second']:.1f} | {r['tokens_per_sentence']:.1f} | {same}"
        print(f"| {name} | {'yes' if r['cache'] else 'no'} | {cells} |")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "multi30k", help="folder (or de/en TSV)")
    parser.add_argument("--run", type=Path, default=None, help="a trained run folder to decode with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=60, help="timed training steps per round and side")
    parser.add_argument("--warmup", type=int, default=5, help="untimed training steps before them")
    parser.add_argument("--sentences", type=int, default=200, help="test sentences decoded")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 round of 3 steps, 20 sentences")
    parser.add_argument("--keel-child", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)  # --keel-child's
    parser.add_argument("--bf16", action="store_true", help=argparse.SUPPRESS)  # --keel-child's
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.steps, args.warmup, args.sentences = 1, 3, 1, 20
    return args


def fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.keel_child is not None:
        return keel_child(args.keel_child, args.threads, args.bf16, args.seed)
    if not args.data.exists():
        fail(f"{args.data} not found: download Multi30k into it (data/README.md) or point --data at its folder")
    if args.run is not None and not args.run.is_dir():
        fail(f"--run {args.run} is not a run folder")
    bf16 = torch.cpu._is_avx512_bf16_supported()  # torchkeel's precision auto takes bf16 here
    precision = "bf16 autocast" if bf16 else "fp32"
    try:
        cfg = bench_config(args.data)
        model, bundle, what = decoding_model(cfg, args.run)
    except KeelError as e:
        fail(str(e))
    if not bundle.spec.extra.get("joint"):
        fail("the plain peer shares one embedding table: it needs data.pairs.joint: true")
    batch = cfg.train.batch_size
    print(f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}; {args.data}: "
          f"{len(bundle.train):,} train / {len(bundle.test):,} test pairs, "
          f"vocabulary {bundle.spec.extra['target_vocab_size']:,}", flush=True)  # fmt: skip
    tensors = draw_sentences(bundle.train, args.warmup, args.steps, batch)
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_inputs(Path(tmp), bundle.spec, tensors)
        rows = head_to_head(folder, bundle.spec, batch, args, bf16)
    src = bundle.test.x[: args.sentences]
    decoded = decoding_speed(model, src, cfg.eval.batch_size, args.threads)
    training_table(rows, args, precision, batch)
    decoding_table(decoded, len(src), what, args.threads)


if __name__ == "__main__":
    main()
