"""A translation run's test scores under other decodings: greedy and beam sizes, each scored
with sacreBLEU (cased and lower-cased 13a) and chrF, as the task's evaluation computes them.

    python benchmarks/translate_decoding.py runs/latest --beams 1 5

Tutorials report BLEU of greedy decoding on lower-cased, tokenised text; ``bleu_lowercase``
with beam 1 is the closest measure (13a tokenisation rather than spaCy's).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from torchkeel.evaluate.metrics import evaluate
from torchkeel.run_model import load_model, load_run_config, prepare_data
from torchkeel.train.losses import build_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_run_config(args.run)
    model, spec, meta = load_model(args.run, "cpu")
    test = prepare_data(cfg, spec).test
    loss = build_loss(meta["loss"], spec=spec)
    metrics = ["bleu", "bleu_lowercase", "chrf", "perplexity"]
    configured = model.decoding
    rows = []
    for beam in args.beams:
        model.decoding = dataclasses.replace(configured, beam=beam)
        start = time.perf_counter()
        scores = evaluate(model, test, spec, loss, metrics, cfg.eval.batch_size)
        rows.append({"beam": beam, **scores, "seconds": time.perf_counter() - start})
    print(f"{args.run.name}: {len(test):,} test sentences")
    print("| beam | BLEU | BLEU lower-cased | chrF | perplexity | seconds |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['beam']} | {r['bleu']:.2f} | {r['bleu_lowercase']:.2f} | {r['chrf']:.2f} | "
              f"{r['perplexity']:.3f} | {r['seconds']:.1f} |")  # fmt: skip
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
