"""Optimisers with parameter groups, and learning-rate schedules as small functions."""

from __future__ import annotations

import math

import torch
from torch import nn

from torchkeel.config import OptimizerConfig, ScheduleConfig
from torchkeel.errors import ConfigError

# Smith & Topin 2017 (super-convergence) / torch.optim.lr_scheduler.OneCycleLR: start the
# one-cycle warmup at peak_lr / 25.
ONECYCLE_START = 1 / 25
ONECYCLE_WARMUP = 0.25


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weight matrices and conv kernels only: decaying biases and
    normalisation gains just pulls them to zero (the nanoGPT / timm rule: decay iff ndim >= 2).
    Embedding tables (``nn.Embedding``, a language model's tied output head included) are not
    decayed either: a row is updated only when its token occurs, so decay would shrink rare
    tokens' vectors towards zero between their updates (Megatron-LM's and minGPT's groups)."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    params = [p for p in model.parameters() if p.requires_grad]  # a tied weight is listed once
    decay = [p for p in params if p.ndim >= 2 and id(p) not in embeddings]
    no_decay = [p for p in params if p.ndim < 2 or id(p) in embeddings]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay)
    kernels = implementation(cfg)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, **kernels)
    if cfg.name == "adam":
        # torch's Adam adds weight decay to the gradient (L2), as the original Adam did
        return torch.optim.Adam(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, **kernels)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, **kernels)
    if cfg.name == "rmsprop":
        if cfg.implementation == "fused":
            raise ConfigError("train.optimizer.implementation: torch has no fused RMSprop; use foreach")
        return torch.optim.RMSprop(groups, lr=cfg.lr, momentum=cfg.momentum, eps=cfg.eps, **kernels)
    raise AssertionError(f"unvalidated optimizer {cfg.name}")


def implementation(cfg: OptimizerConfig) -> dict[str, bool]:
    """torch's optimiser kernels: ``auto`` leaves torch's choice (foreach when every parameter is
    on CUDA, a loop over parameters on the CPU); ``foreach`` updates all parameters of a group
    in a few batched ops; ``fused`` in one kernel (CPU and CUDA, Adam/AdamW/SGD). They compute
    the same update, up to floating-point rounding. benchmarks/speed.py --features measures them."""
    return {
        "auto": {},
        "loop": {"foreach": False},
        "foreach": {"foreach": True},
        "fused": {"fused": True},
    }[cfg.implementation]


def lr_factor(cfg: ScheduleConfig, step: int, total: int, steps_per_epoch: int) -> float:
    """Multiplier of the peak learning rate at optimiser step ``step`` of ``total``."""
    warmup = cfg.warmup if cfg.warmup is not None else (ONECYCLE_WARMUP if cfg.name == "onecycle" else 0.0)
    warm_steps = int(warmup * total)
    if step < warm_steps:
        start = ONECYCLE_START if cfg.name == "onecycle" else 0.0
        return start + (1.0 - start) * (step + 1) / warm_steps
    if cfg.name == "constant":
        return 1.0
    if cfg.name == "step":
        return cfg.gamma ** (step // steps_per_epoch // cfg.step_size)
    # cosine and onecycle both anneal from the peak to final_lr over the steps after warmup
    progress = (step - warm_steps) / max(1, total - warm_steps)
    return cfg.final_lr + (1.0 - cfg.final_lr) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
