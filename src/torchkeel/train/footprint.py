"""A training run's memory footprint, estimated on the meta device before the model is built.

The model is built a first time on ``meta`` (shapes without storage, so a 360 GB model costs
nothing) to count its parameters, and one training batch is run through it there, counting
the bytes of every tensor the forward pass makes. A small model on small inputs is run for
real instead, on the CPU and two samples (``probe_bytes``): on the meta device the elementwise
ops run torch's Python references, whose first call imports torch._dynamo and sympy (1.1 s of
a 2-core machine, as long as the whole default training run; benchmarks/RESULTS.md, "the whole
command"), while building a small model and running it on two samples costs milliseconds. The
estimates are lower bounds (see torchkeel.memory): what they refuse cannot fit.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from torchkeel.config import FOLDER_DATASETS, RunConfig
from torchkeel.config_data import BOX_DATASETS, MASK_DATASETS
from torchkeel.data.bundle import DataBundle, DataSpec
from torchkeel.data.resize import target_size
from torchkeel.errors import KeelError
from torchkeel.memory import check_fits, gib
from torchkeel.models import DETECTORS, build, count_parameters
from torchkeel.tasks import task_of

# models whose builder reads files or runs the user's code: built once only, for real
# a detector's forward needs targets to train and returns its losses: no activation probe runs it
NOT_ESTIMATED = ("custom", "pretrained_text", *DETECTORS)
# run for real on the CPU (probe_bytes) when the model has at most PROBE_PARAMETERS parameters
# (16 MB of fp32 weights) and parameters x input elements per sample is at most PROBE_WORK (a
# forward pass of about a GFLOP for PROBE_BATCH samples); the rest is estimated on the meta device
PROBE_PARAMETERS = 2**22
PROBE_WORK = 2**30
PROBE_BATCH = 2  # BatchNorm in training mode needs more than one value per channel
FIX_MODEL = (
    "make the model or its input smaller (model.channels, model.dim, model.layers; data.image.size, "
    "data.text.max_length)"
)
FIX_STEP = "lower train.batch_size, the input size (data.image.size, data.text.max_length) or the model's size"


def check_training_fits(cfg: RunConfig, data: DataBundle, device: torch.device, batch: int) -> None:
    """ResourceError when the model's parameters, or one training step of ``batch`` samples,
    or one evaluation batch, cannot fit in the memory ``device`` has available."""
    has_train = data.train is not None
    check_step_fits(cfg, data.spec, _input_dtype(data), device, batch, evaluate=has_train, forward=has_train)


def check_images_fit(cfg: RunConfig, device: torch.device) -> None:
    """Before an image folder is decoded (a slow pass at a large ``data.image.size``): one
    training step on one grey image of that size must fit, whatever the files turn out to be."""
    size = target_size(cfg.data.image.size)
    if cfg.data.name not in FOLDER_DATASETS or size is None:
        return
    task = "segmentation" if cfg.data.name in MASK_DATASETS else "classification"  # a mask per image
    if cfg.data.name in BOX_DATASETS:
        task = "detection"
    spec = DataSpec(cfg.data.name, "image", task, (1, *size), classes=["a", "b"])
    check_step_fits(cfg, spec, torch.float32, device, 1, evaluate=False, forward=True)


def check_step_fits(
    cfg: RunConfig, spec: DataSpec, dtype: torch.dtype, device: torch.device, batch: int, evaluate: bool, forward: bool
) -> None:
    if cfg.model.name in NOT_ESTIMATED:
        return
    model = _meta_model(cfg, spec)
    if model is None:
        return
    n = count_parameters(model)
    states = optimizer_states(cfg.train.optimizer.name, cfg.train.optimizer.momentum)
    weights = n * 4 * (2 + states)  # fp32 weights, gradients, optimiser state
    what = f"model '{cfg.model.name}' with {n:,} parameters (weights, gradients and {cfg.train.optimizer.name} state)"
    check_fits(weights, what, FIX_MODEL, device)
    if task_of(spec).loop != "fit" or not forward:  # a GAN's steps are not one forward pass
        return
    shape = tuple(spec.input_shape)
    total, largest = activation_bytes(cfg, spec, model, dtype, batch)
    if total is None:
        return
    step = f"one training step of '{cfg.model.name}' on a batch of {batch} inputs of shape {shape} "
    check_fits(weights + total, step + f"(activations {gib(total)}, parameters {gib(weights)})", FIX_STEP, device)
    if evaluate:
        need = n * 4 + 2 * math.ceil(largest * cfg.eval.batch_size / batch)  # its two largest tensors at once
        what = f"evaluating batches of {cfg.eval.batch_size} (eval.batch_size)"
        check_fits(need, what, "lower eval.batch_size", device)


def optimizer_states(name: str, momentum: float) -> int:
    """fp32 tensors the optimiser keeps per parameter: Adam's two moments, RMSprop's square
    average (and its momentum buffer), SGD's momentum buffer."""
    if name in ("adam", "adamw"):
        return 2
    if name == "rmsprop":
        return 1 + (momentum > 0)
    return int(momentum > 0)


def _meta_model(cfg: RunConfig, spec: DataSpec) -> nn.Module | None:
    try:
        with torch.device("meta"), _NoRandomFills():
            return build(cfg.model, spec)
    except KeelError:
        raise
    except Exception:  # a builder that needs real tensors: the real build reports for itself
        return None


def _input_dtype(data: DataBundle) -> torch.dtype:
    x = getattr(data.train, "x", None)
    if isinstance(x, torch.Tensor):
        return x.dtype
    return getattr(data.train, "dtype", torch.float32)  # a streamed split says what its batches hold


def activation_bytes(
    cfg: RunConfig, spec: DataSpec, meta: nn.Module, dtype: torch.dtype, batch: int
) -> tuple[Any, int]:
    """``probe_bytes`` for a small model on small inputs, else ``forward_bytes`` on ``meta``."""
    n, shape = count_parameters(meta), tuple(spec.input_shape)
    if n <= PROBE_PARAMETERS and n * math.prod(shape) <= PROBE_WORK:
        total, largest = probe_bytes(cfg, spec, dtype, batch)
        if total is not None:
            return total, largest
    return forward_bytes(meta, shape, dtype, batch)


def probe_bytes(cfg: RunConfig, spec: DataSpec, dtype: torch.dtype, batch: int) -> tuple[Any, int]:
    """(bytes, largest tensor's bytes) of what one training forward pass keeps for ``batch``
    inputs: the input, the output and every tensor autograd saves for the backward pass, found
    on a copy of the model built on the CPU and run on PROBE_BATCH samples, scaled to ``batch``
    (activations grow linearly with it); the parameters and buffers are left out (the caller
    counts them). (None, 0) when the model does not run that way."""
    with torch.device("cpu"):
        try:
            model = build(cfg.model, spec).train()
        except Exception:  # a builder that fails here fails again, with its message, on the real build
            return None, 0
        fill = torch.ones if not dtype.is_floating_point else torch.zeros  # token 1: not padding
        x = fill((PROBE_BATCH, *spec.input_shape), dtype=dtype)
    own = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}
    sizes: dict[int, int] = {}

    def keep(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in own:
            sizes[storage.data_ptr()] = storage.nbytes()
        return t

    try:
        with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
            out = model(x)
    except Exception:  # an input the model cannot take (its own checks): the meta estimate decides
        return None, 0
    for t in (x, *(out if isinstance(out, tuple | list) else (out,))):
        if isinstance(t, torch.Tensor):
            keep(t)
    scale = batch / PROBE_BATCH
    return math.ceil(sum(sizes.values()) * scale), math.ceil(max(sizes.values()) * scale)


def forward_bytes(model: nn.Module, shape: tuple[int, ...], dtype: torch.dtype, batch: int) -> tuple[Any, int]:
    """(bytes of every tensor one training forward pass makes, the input included; bytes of
    the largest one) for ``batch`` inputs of ``shape``, on the meta device; (None, 0) when the
    model cannot run there."""
    x = torch.zeros((batch, *shape), dtype=dtype, device="meta")
    counter = _OutputBytes()
    try:
        with _FusedAttention(), counter:
            model.train()(x)
    except Exception:  # an op without a meta kernel: no estimate
        return None, 0
    size = x.numel() * x.element_size()
    return counter.total + size, max(counter.largest, size)


class _NoRandomFills(TorchFunctionMode):
    """While a model is built on the meta device its initialisers fill nothing (a meta tensor
    has no values): ``normal_`` there runs torch's Python reference, whose first call imports
    torch._dynamo and sympy (1-2 s; an ``nn.Embedding`` is initialised that way), so the random
    fills are skipped and the empty tensor returned as it is."""

    FILLS = frozenset(
        {torch.Tensor.normal_, torch.Tensor.uniform_, nn.init.normal_, nn.init.uniform_, nn.init.trunc_normal_}
    )

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func in self.FILLS:
            tensor = args[0] if args else kwargs["tensor"]
            if tensor.is_meta:
                return tensor
        return func(*args, **kwargs)


class _OutputBytes(TorchDispatchMode):
    """Sums the bytes of every new tensor an op makes (views and in-place results share
    storage, so they are left out)."""

    def __init__(self) -> None:
        super().__init__()
        self.total = self.largest = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if not (func.is_view or func._schema.is_mutable):
            for t in out if isinstance(out, tuple | list) else (out,):
                if isinstance(t, torch.Tensor):
                    size = t.numel() * t.element_size()
                    self.total += size
                    self.largest = max(self.largest, size)
        return out


class _FusedAttention(TorchFunctionMode):
    """On the meta device ``scaled_dot_product_attention`` runs its math path, which makes the
    (B, heads, T, T) scores; the CPU and CUDA kernels that training uses (flash, memory-
    efficient) never do. Stand in for them: the output alone, (B, heads, T, value dim)."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        if func is F.scaled_dot_product_attention:
            q = args[0]
            v = args[2] if len(args) > 2 else (kwargs or {})["value"]
            return torch.empty((*q.shape[:-1], v.shape[-1]), dtype=q.dtype, device=q.device)
        return func(*args, **(kwargs or {}))
