"""A plain one-file character-level GPT on Tiny Shakespeare, written as nanoGPT writes it
(model.py + train.py, shrunk): the peer that configs/shakespeare-char.yaml is measured against.

Same model and settings as the preset: 4 layers, 4 heads, 128-dim embeddings, context 64, no
dropout, no biases, tied embeddings, GPT-2 init; batch 12, 2,000 iterations, AdamW (lr 1e-3,
betas 0.9/0.99, weight decay 0.1 on the matrices of the blocks), 100 warmup steps then cosine to 1e-4,
gradients clipped at norm 1; the last 10% of the file's characters held out. Batches are
``torch.randint`` windows (nanoGPT's get_batch). At the end the val loss is measured on every
non-overlapping 64-character window of the held-out part, as torchkeel's text_file evaluates.

Prints one JSON line: val_loss (nats per character), wall_seconds, tokens_per_second.

    python benchmarks/peers/nanogpt_char.py [--path data/tinyshakespeare/input.txt] [--iters 2000]
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
import torch.nn.functional as F
from torch import nn

# ---- settings (nanoGPT's CPU baby GPT: README "I only have a macbook")
N_LAYER, N_HEAD, N_EMBD, BLOCK = 4, 4, 128, 64
BATCH = 12  # windows per step
LR, MIN_LR, WARMUP = 1e-3, 1e-4, 100  # peak lr, final lr, warmup steps
BETAS, WEIGHT_DECAY, GRAD_CLIP = (0.9, 0.99), 0.1, 1.0
VAL_FRACTION = 0.1


# ---- data: characters -> ids, the first 90% trains
def load(path: str) -> tuple[torch.Tensor, torch.Tensor, int]:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    cut = int(len(text) * (1 - VAL_FRACTION))
    chars = sorted(set(text[:cut]))  # the training part's vocabulary, as torchkeel's char tokeniser
    index = {c: i for i, c in enumerate(chars)}
    encode = lambda s: torch.tensor([index[c] for c in s if c in index], dtype=torch.long)  # noqa: E731
    return encode(text[:cut]), encode(text[cut:]), len(chars)


def get_batch(data: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    i = torch.randint(len(data) - BLOCK, (BATCH,))
    x = torch.stack([data[j : j + BLOCK] for j in i])  # (B, T)
    y = torch.stack([data[j + 1 : j + 1 + BLOCK] for j in i])  # (B, T): the next characters
    return x, y


# ---- model
class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(N_EMBD, bias=False), nn.LayerNorm(N_EMBD, bias=False)
        self.qkv, self.proj = nn.Linear(N_EMBD, 3 * N_EMBD, bias=False), nn.Linear(N_EMBD, N_EMBD, bias=False)
        self.fc, self.out = nn.Linear(N_EMBD, 4 * N_EMBD, bias=False), nn.Linear(4 * N_EMBD, N_EMBD, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, N_HEAD, C // N_HEAD).transpose(1, 2) for t in (q, k, v))  # (B, h, T, d)
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(att.transpose(1, 2).reshape(B, T, C))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    def __init__(self, vocab: int):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, N_EMBD), nn.Embedding(BLOCK, N_EMBD)
        self.blocks = nn.ModuleList(Block() for _ in range(N_LAYER))
        self.ln_f = nn.LayerNorm(N_EMBD, bias=False)
        self.head = nn.Linear(N_EMBD, vocab, bias=False)
        self.head.weight = self.wte.weight  # weight tying
        for name, p in self.named_parameters():  # GPT-2 init; residual projections scaled by depth
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * N_LAYER) if name.endswith(("proj.weight", "out.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))  # (B, T, C)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))  # (B, T, vocab)


# ---- schedule: linear warmup, then cosine to MIN_LR (nanoGPT's get_lr)
def get_lr(it: int, iters: int) -> float:
    if it < WARMUP:
        return LR * (it + 1) / (WARMUP + 1)
    ratio = min(1.0, (it - WARMUP) / max(1, iters - WARMUP))
    return MIN_LR + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (LR - MIN_LR)


@torch.no_grad()
def val_loss(model: nn.Module, val: torch.Tensor) -> float:
    """Mean loss over every non-overlapping BLOCK-character window of the held-out part."""
    model.eval()
    n = (len(val) - 1) // BLOCK
    starts = torch.arange(n) * BLOCK
    total = 0.0
    for chunk in starts.split(256):
        x = torch.stack([val[j : j + BLOCK] for j in chunk])
        y = torch.stack([val[j + 1 : j + 1 + BLOCK] for j in chunk])
        logits = model(x)
        total += F.cross_entropy(logits.view(-1, logits.shape[-1]), y.view(-1), reduction="sum").item()
    return total / (n * BLOCK)


def main() -> None:
    global LR, MIN_LR
    ap = argparse.ArgumentParser()
    ap.add_argument("--path", default="data/tinyshakespeare/input.txt")
    ap.add_argument("--iters", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=LR, help="peak learning rate; the final one is a tenth of it")
    args = ap.parse_args()
    LR, MIN_LR = args.lr, args.lr / 10
    torch.manual_seed(args.seed)
    train, val, vocab = load(args.path)
    model = GPT(vocab)
    # matrices decay; norms and the embedding tables (the tied head included) do not, as in
    # torchkeel's optimiser groups (nanoGPT also decays the embeddings)
    embeddings = {id(model.wte.weight), id(model.wpe.weight)}
    decay = [p for p in model.parameters() if p.dim() >= 2 and id(p) not in embeddings]
    no_decay = [p for p in model.parameters() if p.dim() < 2 or id(p) in embeddings]
    groups = [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=LR, betas=BETAS)
    start = time.perf_counter()
    model.train()
    for it in range(args.iters):
        for group in optimizer.param_groups:
            group["lr"] = get_lr(it, args.iters)
        x, y = get_batch(train)
        logits = model(x)
        loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), y.view(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        optimizer.step()
    train_seconds = time.perf_counter() - start
    loss = val_loss(model, val)
    wall = time.perf_counter() - start
    print(json.dumps({
        "val_loss": loss,
        "wall_seconds": wall,
        "train_seconds": train_seconds,
        "tokens_per_second": args.iters * BATCH * BLOCK / train_seconds,
        "iters": args.iters,
        "parameters": sum(p.numel() for p in model.parameters()),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
