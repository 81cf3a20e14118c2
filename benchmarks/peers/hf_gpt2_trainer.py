"""Hugging Face peer for the language-model benchmark: `transformers` GPT-2 of the preset's size
(4 layers, 4 heads, 128-dim embeddings, context 64, no dropout) trained with its `Trainer` on
random 64-character windows of a text file, character vocabulary, batch 12, AdamW lr 1e-3
(beta2 0.99, weight decay 0.1), cosine schedule, gradients clipped at 1.0, on the CPU.

It measures training throughput only (tokens per second over `--steps` steps, from the
Trainer's own `train_runtime`), not the loss after the full 2,000 steps. Prints one JSON line.

Usage: python benchmarks/peers/hf_gpt2_trainer.py --data data/tinyshakespeare/input.txt [--steps 200]
Needs: pip install transformers accelerate
"""

from __future__ import annotations

import argparse
import json
import tempfile

import numpy as np
import torch


class Windows(torch.utils.data.Dataset):
    """``length`` random windows of ``block`` tokens (a fixed seeded draw, as an epoch would be)."""

    def __init__(self, tokens: np.ndarray, block: int, length: int, seed: int):
        self.tokens, self.block = torch.from_numpy(tokens.astype(np.int64)), block
        self.starts = torch.randint(len(tokens) - block, (length,), generator=torch.Generator().manual_seed(seed))

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> dict:
        ids = self.tokens[self.starts[i] : self.starts[i] + self.block]
        return {"input_ids": ids, "labels": ids}  # GPT2LMHeadModel shifts the labels itself


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--block", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

    with open(args.data, encoding="utf-8") as f:
        text = f.read()
    chars = sorted(set(text))
    lookup = {c: i for i, c in enumerate(chars)}
    tokens = np.array([lookup[c] for c in text[: int(0.9 * len(text))]], dtype=np.uint16)
    config = GPT2Config(
        vocab_size=len(chars), n_positions=args.block, n_embd=128, n_layer=4, n_head=4,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    torch.manual_seed(args.seed)
    model = GPT2LMHeadModel(config)
    train_args = TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="hf_gpt2_"), per_device_train_batch_size=args.batch, max_steps=args.steps,
        learning_rate=1e-3, adam_beta2=0.99, weight_decay=0.1, lr_scheduler_type="cosine", warmup_steps=10,
        max_grad_norm=1.0, logging_steps=10**9, save_strategy="no", report_to=[], use_cpu=True,
        dataloader_num_workers=0, disable_tqdm=True, seed=args.seed,
    )  # fmt: skip
    windows = Windows(tokens, args.block, args.steps * args.batch, args.seed)
    result = Trainer(model=model, args=train_args, train_dataset=windows).train()
    seconds = result.metrics["train_runtime"]
    print(
        json.dumps(
            {
                "peer": "transformers GPT2LMHeadModel + Trainer",
                "parameters": sum(p.numel() for p in model.parameters()),
                "steps": args.steps,
                "train_seconds": seconds,
                "tokens_per_second": args.steps * args.batch * args.block / seconds,
                "final_train_loss": result.training_loss,
            }
        )
    )


if __name__ == "__main__":
    main()
