"""A plain PyTorch translation Transformer (``nn.Transformer``): the peer of
benchmarks/translate_speed.py.

The same sizes and settings as configs/multi30k-de-en.yaml: 3 + 3 pre-norm layers
(``norm_first=True``), 256 wide, 4 heads, feed-forward 1024, dropout 0.1, one embedding table
shared by source, target and the tied output projection, sinusoidal positions, label-smoothed
cross-entropy (0.1) over the real target tokens, AdamW (lr 1e-3, weight decay 1e-4 on the
matrices), one-cycle, gradients clipped at norm 1, bf16 autocast with --bf16. It trains on the
token ids translate_speed.py hands it (torchkeel's tokenisation, so both sides see the same
tokens), the textbook way: the sentences in a random order, sliced into batches of 128, each
padded to its longest source and target, with ``src_key_padding_mask``,
``tgt_key_padding_mask``, ``memory_key_padding_mask`` and a causal ``tgt_mask``. Nothing else
(no validation, checkpoints or logging). The --warmup batches are trained first and not timed.

Prints one JSON line: train_seconds (the timed steps), steps, target_tokens (real target
tokens predicted: EOS counted, BOS and padding not), tokens_per_second, fill (real tokens over
padded positions, source and target together) and loss (the timed steps' mean, as fit's
train/loss).

    python benchmarks/peers/seq2seq_plain.py --tensors pairs.safetensors --vocab 8000 --threads 2 --bf16
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import time
import warnings
from pathlib import Path

import safetensors.torch
import torch
import torch.nn.functional as F
from torch import nn

# ---- settings (configs/multi30k-de-en.yaml: the model's defaults and the train section)
LAYERS, WIDTH, HEADS, FFN, DROPOUT = 3, 256, 4, 1024, 0.1  # per stack; d_model; heads of 64; inner width
LR, WEIGHT_DECAY = 1e-3, 1e-4  # AdamW peak lr (per step of 128 sentences); decay on matrices only
WARMUP_FRACTION = 0.25  # one-cycle: a quarter of the steps warming up from LR / 25, then cosine
LABEL_SMOOTHING, GRAD_CLIP = 0.1, 1.0
PAD = 0


def sinusoids(length: int, width: int) -> torch.Tensor:
    """(length, width) sinusoidal positions (Vaswani et al. 2017, section 3.5)."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    rate = torch.exp(torch.arange(0, width, 2, dtype=torch.float32) * (-math.log(10000.0) / width))
    table = torch.zeros(length, width)
    table[:, 0::2], table[:, 1::2] = torch.sin(position * rate), torch.cos(position * rate)
    return table


class Translator(nn.Module):
    def __init__(self, vocab: int, max_length: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, WIDTH, padding_idx=PAD)  # source, target and output: one table
        nn.init.normal_(self.embed.weight, std=WIDTH**-0.5)  # unit-variance rows after the sqrt(width) scale
        self.drop = nn.Dropout(DROPOUT)
        with warnings.catch_warnings():  # "enable_nested_tensor ... norm_first": an inference fast path, unused
            warnings.simplefilter("ignore", UserWarning)
            self.transformer = nn.Transformer(
                WIDTH, HEADS, LAYERS, LAYERS, FFN, DROPOUT, batch_first=True, norm_first=True
            )  # fmt: skip
        self.register_buffer("positions", sinusoids(max_length, WIDTH), persistent=False)

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.drop(self.embed(ids) * math.sqrt(WIDTH) + self.positions[: ids.shape[1]])  # (B, T, C)

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        t = tgt_in.shape[1]
        causal = torch.ones(t, t, dtype=torch.bool).triu(1)  # True: may not attend (a later position)
        h = self.transformer(
            self.embed_tokens(src),
            self.embed_tokens(tgt_in),
            tgt_mask=causal,
            src_key_padding_mask=src == PAD,
            tgt_key_padding_mask=tgt_in == PAD,
            memory_key_padding_mask=src == PAD,
            tgt_is_causal=True,
        )
        return F.linear(h, self.embed.weight)  # (B, T, V): the tied output projection


def one_cycle(step: int, total: int) -> float:
    """The lr at ``step`` of ``total``: a linear warm-up from LR / 25, then cosine to 0 (torch's
    OneCycleLR divides by zero when a quarter of the steps rounds to one; --quick has four)."""
    warm = max(1, int(WARMUP_FRACTION * total))
    if step < warm:
        return LR * (1 / 25 + (1 - 1 / 25) * (step + 1) / warm)
    return LR * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))


def batches(x: torch.Tensor, y: torch.Tensor, size: int, generator: torch.Generator):
    """Random batches of ``size`` sentences, each cut to its longest source and target."""
    perm = torch.randperm(len(x), generator=generator)
    for i in range(0, len(x), size):
        xb, yb = x[perm[i : i + size]], y[perm[i : i + size]]
        yield xb[:, : int((xb != PAD).sum(1).max())], yb[:, : int((yb != PAD).sum(1).max())]


def train_throughput(
    tensors: dict[str, torch.Tensor], vocab: int, *, batch: int = 128, threads: int = 2, bf16: bool = False,
    seed: int = 0,
) -> dict[str, float]:  # fmt: skip
    """Train on ``x_warmup, y_warmup`` (untimed), then on ``x_timed, y_timed``: the JSON's numbers."""
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x_warm, y_warm, x, y = (tensors[k] for k in ("x_warmup", "y_warmup", "x_timed", "y_timed"))
    model = Translator(vocab, max(x.shape[1], y.shape[1], x_warm.shape[1], y_warm.shape[1]))
    embed = {id(model.embed.weight)}
    decay = [p for p in model.parameters() if p.dim() >= 2 and id(p) not in embed]
    no_decay = [p for p in model.parameters() if p.dim() < 2 or id(p) in embed]
    groups = [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=LR)
    warm, timed = -(-len(x_warm) // batch), -(-len(x) // batch)  # steps
    precision = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def step(it: int, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        for group in optimizer.param_groups:
            group["lr"] = one_cycle(it, warm + timed)
        with precision:
            logits = model(src, tgt[:, :-1])  # teacher forcing: read BOS..., predict ...EOS
        flat = logits.reshape(-1, logits.shape[-1]).float()
        loss = F.cross_entropy(flat, tgt[:, 1:].reshape(-1), ignore_index=PAD, label_smoothing=LABEL_SMOOTHING)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        optimizer.step()
        return loss

    model.train()
    for it, (src, tgt) in enumerate(batches(x_warm, y_warm, batch, g)):  # kernels, allocator, caches warm
        step(it, src, tgt)
    real = padded = 0
    losses = torch.zeros(())
    start = time.perf_counter()
    for it, (src, tgt) in enumerate(batches(x, y, batch, g), start=warm):
        losses += step(it, src, tgt).detach()
        real += int((src != PAD).sum()) + int((tgt != PAD).sum())
        padded += src.numel() + tgt.numel()
    seconds = time.perf_counter() - start
    tokens = int((y[:, 1:] != PAD).sum())
    return {
        "train_seconds": seconds,
        "steps": timed,
        "target_tokens": tokens,
        "tokens_per_second": tokens / seconds,
        "fill": real / padded,
        "loss": float(losses) / timed,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tensors", type=Path, required=True, help="x_warmup, y_warmup, x_timed, y_timed")
    parser.add_argument("--vocab", type=int, required=True, help="the joint vocabulary's size")
    parser.add_argument("--batch", type=int, default=128, help="sentences per step")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast for the forward pass and loss")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    tensors = safetensors.torch.load_file(args.tensors)
    result = train_throughput(
        tensors, args.vocab, batch=args.batch, threads=args.threads, bf16=args.bf16, seed=args.seed
    )  # fmt: skip
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
