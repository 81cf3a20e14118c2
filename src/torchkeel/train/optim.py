"""Optimisers with parameter groups, and learning-rate schedules as small functions."""

from __future__ import annotations

import inspect
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
        return _EAGER[torch.optim.SGD](groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, **kernels)
    if cfg.name == "adam":
        # torch's Adam adds weight decay to the gradient (L2), as the original Adam did
        return _EAGER[torch.optim.Adam](groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, **kernels)
    if cfg.name == "adamw":
        return _EAGER[torch.optim.AdamW](groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, **kernels)
    if cfg.name == "rmsprop":
        if cfg.implementation == "fused":
            raise ConfigError("train.optimizer.implementation: torch has no fused RMSprop; use foreach")
        return _EAGER[torch.optim.RMSprop](groups, lr=cfg.lr, momentum=cfg.momentum, eps=cfg.eps, **kernels)
    raise AssertionError(f"unvalidated optimizer {cfg.name}")


def _eager(cls: type[torch.optim.Optimizer]) -> type[torch.optim.Optimizer]:
    """``cls`` without the decorators that import ``torch._dynamo`` (1.1 s on 2 CPU cores, as
    long as importing torch; benchmarks/RESULTS.md, "the whole command").

    In torch 2.14 ``Optimizer.__init__`` (through ``add_param_group``), ``zero_grad``,
    ``state_dict`` and ``load_state_dict`` are wrapped in ``torch._disable_dynamo``, and every
    optimiser's ``step`` in ``_use_grad_for_differentiable``; both import ``torch._dynamo`` on
    their first call (torch/_compile.py, torch/optim/optimizer.py), and torch has no switch to
    skip it. The wrappers only matter while torch.compile traces the call: they keep dynamo out
    of the optimiser and mark graph breaks. fit() never traces the optimiser (``train.compile``
    compiles the forward pass alone), so the same methods unwrapped (``functools.wraps`` keeps
    them as ``__wrapped__``) compute the same update; the step runs under ``no_grad`` as the
    wrapper runs it for a non-differentiable optimiser. tests/test_optim.py checks the
    trajectory against torch's class and that ``torch._dynamo`` stays unimported."""
    raw_step = inspect.unwrap(cls.step)

    def step(self, closure=None):  # noqa: ANN001, ANN202 (torch's signature)
        with torch.no_grad():
            return raw_step(self, closure)

    methods = {name: inspect.unwrap(getattr(torch.optim.Optimizer, name)) for name in _DYNAMO_WRAPPED}
    return type(cls.__name__, (cls,), {**methods, "step": step, "__doc__": cls.__doc__, "__module__": __name__})


_DYNAMO_WRAPPED = ("add_param_group", "zero_grad", "state_dict", "load_state_dict")
_EAGER = {cls: _eager(cls) for cls in (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, torch.optim.RMSprop)}


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
