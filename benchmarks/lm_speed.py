"""The language-model targets on Tiny Shakespeare, side by side in one run.

1. `keel train configs/shakespeare-char.yaml` against benchmarks/peers/nanogpt_char.py (a plain
   nanoGPT-style script: the same model, settings and split), interleaved for --rounds rounds:
   validation loss (nats per character on the held-out last 10%), training seconds, whole-process
   wall seconds, tokens/s, and the ratio plain/keel of the wall times.
2. transformers' GPT-2 of the same size with its Trainer: training tokens/s
   (benchmarks/peers/hf_gpt2_trainer.py; skipped when transformers/accelerate are missing).
3. Generation from the last keel run: tokens/s at --new-tokens new tokens with and without the
   KV cache (Generator.tokens_per_second).
4. Memory: peak RSS of a short `keel train` on a corpus of --big-mb megabytes (the file
   repeated) against the same on the file itself; flat when the token file is memory-mapped.

Usage: python benchmarks/lm_speed.py [--data data/tinyshakespeare/input.txt] [--rounds 3]
                                     [--hf-steps 200] [--new-tokens 500] [--big-mb 1024]
       python benchmarks/lm_speed.py --generation-only     (3. alone, for both presets' models)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from speed import run_process  # noqa: E402  (wall time, peak RSS and CPU time of one process)

CONFIG = REPO / "configs" / "shakespeare-char.yaml"
PLAIN = REPO / "benchmarks" / "peers" / "nanogpt_char.py"
HF = REPO / "benchmarks" / "peers" / "hf_gpt2_trainer.py"


def keel_train(data: Path, out: Path, sets: list[str] = ()) -> dict:
    cmd = [sys.executable, "-m", "torchkeel", "train", str(CONFIG), "-q", "--out-dir", str(out)]
    cmd += ["--set", f"data.path={data}", "--set", "eval.report=false"]
    cmd += [a for s in sets for a in ("--set", s)]
    _, wall, rss, cpu = run_process(cmd)
    run = max(out.glob("*/summary.json"), key=lambda p: p.stat().st_mtime).parent
    summary = json.loads((run / "summary.json").read_text())
    return {
        "run": run,
        "val_loss": summary["test"]["loss"],
        "train_s": summary["train_seconds"],
        "wall_s": wall,
        "rss_mb": rss,
    }


def plain_train(data: Path, seed: int) -> dict:
    lr = yaml.safe_load(CONFIG.read_text())["train"]["optimizer"]["lr"]  # the preset's, so both run one recipe
    cmd = [sys.executable, str(PLAIN), "--path", str(data), "--seed", str(seed), "--lr", str(lr)]
    stdout, wall, rss, _ = run_process(cmd)
    result = json.loads(stdout.strip().splitlines()[-1])
    return {"val_loss": result["val_loss"], "train_s": result["train_seconds"], "wall_s": wall, "rss_mb": rss}


def head_to_head(data: Path, rounds: int, tmp: Path) -> tuple[list[dict], list[dict]]:
    keel, plain = [], []
    for r in range(rounds):  # interleaved, the order alternating, so drifts in load hit both
        order = ["keel", "plain"] if r % 2 == 0 else ["plain", "keel"]
        for who in order:
            if who == "keel":
                keel.append(keel_train(data, tmp / f"keel{r}", [f"seed={r}"]))
            else:
                plain.append(plain_train(data, r))
            row = (keel if who == "keel" else plain)[-1]
            print(f"round {r} {who:5s}: val loss {row['val_loss']:.4f}  train {row['train_s']:.1f} s  "
                  f"wall {row['wall_s']:.1f} s  peak RSS {row['rss_mb']:.0f} MB", flush=True)  # fmt: skip
    return keel, plain


def hf_peer(data: Path, steps: int) -> dict | None:
    try:
        stdout, wall, _, _ = run_process([sys.executable, str(HF), "--data", str(data), "--steps", str(steps)])
    except RuntimeError as e:
        print(f"transformers peer skipped: {str(e).splitlines()[-1]}")
        return None
    return json.loads(stdout.strip().splitlines()[-1])


def generation(run: Path, new_tokens: int) -> dict:
    sys.path.insert(0, str(REPO / "src"))
    from torchkeel import Generator
    from torchkeel.generation.speed import cache_speedup
    from torchkeel.train.runtime import set_threads
    from torchkeel.train.threads import decode_threads

    model = Generator.from_run(run).model
    set_threads(decode_threads(model))  # as `keel generate` and `keel serve` run it
    return cache_speedup(model, new_tokens)


def preset_generation(new_tokens: int) -> None:
    """--generation-only: the KV-cache speed-up of both presets' models, untrained (the time of a
    step does not depend on the weights' values), at `keel generate`'s thread count."""
    sys.path.insert(0, str(REPO / "src"))
    from torchkeel.config import load_config
    from torchkeel.data.bundle import DataSpec
    from torchkeel.generation.speed import cache_speedup
    from torchkeel.models import build
    from torchkeel.train.runtime import set_threads
    from torchkeel.train.threads import decode_threads

    for name in ("shakespeare-char.yaml", "shakespeare-char-10min.yaml"):
        cfg = load_config(REPO / "configs" / name)
        block = cfg.data.corpus.block_size
        spec = DataSpec("text_file", "text", "language_model", (block,), extra={"vocab_size": 65, "block_size": block})
        model = build(cfg.model, spec).eval()
        set_threads(decode_threads(model))
        gen = cache_speedup(model, new_tokens)
        print(f"{name}: context {block}, {sum(p.numel() for p in model.parameters()):,} parameters: "
              f"{gen['tokens_per_s_cache']:.0f} tokens/s with the KV cache, {gen['tokens_per_s_no_cache']:.0f} "
              f"without ({gen['speedup']:.2f}x, median of 5 alternating rounds)")  # fmt: skip


def memory(data: Path, big_mb: int, tmp: Path) -> dict:
    text = data.read_text(encoding="utf-8")
    big = tmp / "big.txt"
    with big.open("w", encoding="utf-8") as f:
        for _ in range(max(1, big_mb * 2**20 // len(text.encode()))):
            f.write(text)
    short = ["train.epochs=1", "data.corpus.steps_per_epoch=50", "data.corpus.eval_windows=200"]
    small_run = keel_train(data, tmp / "mem_small", short)
    first = keel_train(big, tmp / "mem_big", short)  # encodes the corpus into its token file
    again = keel_train(big, tmp / "mem_big", short)  # reuses the token file
    return {
        "corpus_mb": big.stat().st_size / 2**20,
        "small_rss_mb": small_run["rss_mb"],
        "big_first_rss_mb": first["rss_mb"],
        "big_first_wall_s": first["wall_s"],
        "big_again_rss_mb": again["rss_mb"],
        "big_again_wall_s": again["wall_s"],
    }


def medians(rows: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in rows) for k in ("val_loss", "train_s", "wall_s")}


def table(keel: list[dict], plain: list[dict], hf: dict | None, tokens: int) -> None:
    k, p = medians(keel), medians(plain)
    print("\n| | val loss (median) | train s | whole process s | training tokens/s |")
    print("|---|---|---|---|---|")
    for name, m in (("torchkeel", k), ("plain nanoGPT-style", p)):
        print(
            f"| {name} | {m['val_loss']:.4f} | {m['train_s']:.1f} | {m['wall_s']:.1f} | {tokens / m['train_s']:.0f} |"
        )
    if hf is not None:
        cells = f"- | {hf['train_seconds']:.1f} | - | {hf['tokens_per_second']:.0f}"
        print(f"| transformers + Trainer ({hf['steps']} steps) | {cells} |")
    print(
        f"\nratio plain/keel: whole process {p['wall_s'] / k['wall_s']:.2f}, training {p['train_s'] / k['train_s']:.2f}"
    )
    print(
        f"val losses: keel {[round(r['val_loss'], 4) for r in keel]}, plain {[round(r['val_loss'], 4) for r in plain]}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO / "data" / "tinyshakespeare" / "input.txt")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--hf-steps", type=int, default=200)
    parser.add_argument("--new-tokens", type=int, default=500)
    parser.add_argument("--big-mb", type=int, default=1024, help="0 skips the memory check")
    parser.add_argument("--generation-only", action="store_true", help="only the presets' KV-cache speed-up")
    args = parser.parse_args()
    if args.generation_only:
        return preset_generation(args.new_tokens)
    tokens = 2000 * 12 * 64  # the preset: 2,000 steps of 12 windows of 64 characters
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        keel, plain = head_to_head(args.data, args.rounds, tmp)
        hf = hf_peer(args.data, args.hf_steps)
        gen = generation(keel[-1]["run"], args.new_tokens)
        mem = memory(args.data, args.big_mb, tmp) if args.big_mb else None
    table(keel, plain, hf, tokens)
    print(f"generation at {args.new_tokens} new tokens: {gen['tokens_per_s_cache']:.0f} tokens/s with the KV cache, "
          f"{gen['tokens_per_s_no_cache']:.0f} without ({gen['speedup']:.1f}x)")  # fmt: skip
    if mem is not None:
        print(f"memory: {mem['corpus_mb']:.0f} MB corpus: peak RSS {mem['big_first_rss_mb']:.0f} MB while encoding "
              f"({mem['big_first_wall_s']:.0f} s), {mem['big_again_rss_mb']:.0f} MB reusing its token file; "
              f"{mem['small_rss_mb']:.0f} MB on the 1 MB file")  # fmt: skip


if __name__ == "__main__":
    main()
