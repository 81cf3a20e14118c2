"""Data-parallel training on ``torch.distributed``: process-group setup and teardown, rank
helpers, DistributedDataParallel, and metrics summed over ranks.

Every function here is a no-op (or the single-process answer) when no process group is up,
so ``fit`` reads the same either way. A process group is started only by
:func:`setup`, which the workers that ``keel train --nproc N`` launches through torchrun call
(see :mod:`torchkeel.train.launch`); a user script run under ``torchrun`` may call it too.

``train.batch_size`` stays the *global* batch: each of N ranks takes ``batch_size / N``
samples of every step from its shard of the epoch's permutation, and DistributedDataParallel
averages the gradients, so N processes follow the same trajectory as one (within float
rounding; exactly the same batches when the train split divides by the batch size).
The model is built from the run's seed on every rank (and DistributedDataParallel broadcasts
rank 0's weights); training then draws from one RNG stream per rank (:func:`rank_seed`), so
augmentation and dropout differ between the ranks' shares of a batch, as they would within
one process. Rank 0's stream is the one-process stream. A checkpoint holds every rank's RNG
states (gathered to rank 0, which writes it) and each rank resumes from its own.
"""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from torchkeel.data.bundle import DataSpec, Split
from torchkeel.errors import ConfigError, KeelError, RunError
from torchkeel.train import runtime

T = TypeVar("T")


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0: the one process that writes the run folder and prints."""
    return rank() == 0


def rank_seed(seed: int) -> int:
    """The seed of this rank's RNG streams during training: ``seed`` itself on rank 0 (and on
    one process); for rank r > 0 one drawn from ``(seed, r)`` by numpy's SeedSequence, whose
    purpose is distinct streams for related keys (``seed + r`` would be rank 0 of ``seed + r``)."""
    r = rank()
    if r == 0:
        return seed
    import numpy as np

    return int(np.random.SeedSequence([seed % 2**32, r]).generate_state(1)[0])


def agree(flag: bool) -> bool:
    """True on every rank when ``flag`` is True on any; one small all-reduce, so every rank
    must call it at the same point (``flag`` itself on one process)."""
    if not active():
        return flag
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    value = torch.tensor([int(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def gather_to_main(obj: T) -> list[T] | None:
    """Every rank's ``obj`` in rank order, on rank 0 (None on the others); ``[obj]`` on one
    process. A collective: every rank must call it at the same point."""
    if not active():
        return [obj]
    gathered: list[Any] | None = [None] * world_size() if is_main() else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered


def barrier() -> None:
    """Wait until every rank gets here (nothing on one process)."""
    if active():
        dist.barrier()


def setup(device_name: str = "auto") -> torch.device:
    """Join the process group that torchrun describes in this process's environment
    (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT): NCCL for CUDA, gloo for the CPU.
    Returns this rank's device (``cuda:LOCAL_RANK`` on GPUs)."""
    device = runtime.pick_device(device_name)
    if device.type == "mps":
        raise ConfigError("train.device: distributed training runs on 'cpu' or 'cuda', not 'mps'")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")
    return device


def teardown() -> None:
    if active():
        dist.destroy_process_group()


def local_device(device: torch.device) -> torch.device:
    """This rank's own GPU under DDP (set by :func:`setup`); ``device`` otherwise."""
    if active() and device.type == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return device


def local_batch_size(batch_size: int) -> int:
    """Each rank's share of the global batch."""
    world = world_size()
    if batch_size % world:
        raise ConfigError(
            f"train.batch_size {batch_size} is the global batch and must divide evenly among "
            f"{world} processes; use a multiple of {world}"
        )
    return batch_size // world


def shard() -> dict[str, int]:
    """TensorLoader keywords: this rank's share of each epoch's permutation."""
    return {"rank": rank(), "world_size": world_size()}


def wrap(model: nn.Module) -> nn.Module:
    """DistributedDataParallel around ``model`` when a process group is up (gradients are
    averaged over ranks in the backward pass); the model itself otherwise. Keep calling the
    unwrapped model for state dicts and evaluation: its parameters are the same tensors."""
    if not active():
        return model
    device = next(model.parameters()).device
    return nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def all_reduced(accumulator: T) -> T:
    """A copy of a metric accumulator (TrainMeter, MetricAccumulator) whose tensors of running
    sums are summed over all ranks; the accumulator itself when training on one process."""
    if not active():
        return accumulator
    summed = copy.copy(accumulator)
    for name, value in vars(accumulator).items():  # same order on every rank
        if isinstance(value, torch.Tensor):
            total = value.clone()
            dist.all_reduce(total)
            setattr(summed, name, total)
    for name in getattr(accumulator, "gathered", ()):  # per-sample lists (a detector's boxes): every rank's
        parts: list[Any] = [None] * world_size()
        dist.all_gather_object(parts, getattr(accumulator, name))
        setattr(summed, name, [item for part in parts for item in part])
    return summed


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    split: Split,
    spec: DataSpec,
    loss_fn: Any,
    metrics: list[str],
    batch_size: int = 1024,
    top_k: int = 3,
    tta: str = "none",
) -> dict[str, float]:
    """``evaluate.metrics.evaluate`` with each rank taking every N-th sample and the sums
    all-reduced: the same numbers as one process, in 1/N of the time. The loop is that of
    ``evaluate`` because it returns computed values, and these must be summed first."""
    from torchkeel.evaluate.metrics import MetricAccumulator
    from torchkeel.evaluate.metrics import evaluate as evaluate_all
    from torchkeel.evaluate.tta import tta_forward
    from torchkeel.tasks import task_of

    if not active():
        return evaluate_all(model, split, spec, loss_fn, metrics, batch_size, top_k, tta)
    model.eval()
    device = next(model.parameters()).device
    acc = MetricAccumulator(spec, metrics, device, top_k)
    task = task_of(spec)
    forward = model if tta == "none" else functools.partial(tta_forward, model, mode=tta)
    x, y = split.x[rank() :: world_size()], split.y[rank() :: world_size()]  # every sample once
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size].to(device), y[start : start + batch_size].to(device)
        out, loss = task.outputs(forward, xb, yb, loss_fn)
        acc.update(out, yb, loss)
    return all_reduced(acc).compute()


def run_on_main(make: Callable[[], T]) -> T:
    """``make()`` on rank 0 only (e.g. creating the run folder), its result sent to every
    rank. A KeelError on rank 0 is raised on every rank, so none waits for the others."""
    if not active():
        return make()
    box: list[Any] = [None]
    if is_main():
        try:
            box[0] = ("ok", make())
        except KeelError as e:
            box[0] = ("error", str(e))
    dist.broadcast_object_list(box, src=0)
    status, value = box[0]
    if status == "error":
        raise RunError(value)
    return value


def environment() -> dict[str, Any]:
    """For env.json: how the run was distributed."""
    if not active():
        return {}
    return {"distributed": {"world_size": world_size(), "backend": dist.get_backend()}}


def describe(batch_size: int) -> str:
    world = world_size()
    return (
        f"DistributedDataParallel over {world} processes ({dist.get_backend()}): "
        f"global batch {batch_size} = {world} x {batch_size // world}"
    )
