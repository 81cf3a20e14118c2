"""``keel train CONFIG --nproc N``: N training processes per node through PyTorch's own
launcher, ``torch.distributed.run`` (torchrun, elastic), and the entry point each of them runs.

The launcher resolves and validates the config first (a bad key fails before any process
starts), then has torchrun start ``python -m torchkeel.train.launch --config-json ...`` N
times. Each worker joins the process group (:func:`distributed.setup`) and runs the same
``experiment.train`` as a single process; rank 0 alone writes the run folder and prints.

Rendezvous: on one node a free local port (torchrun's ``--standalone``); across nodes every
node runs the same command with ``--nnodes M --rdzv-endpoint HOST:PORT`` (HOST: the first
node), plus ``--node-rank i`` for fixed node ranks (static rendezvous, node 0 serving the
endpoint) or without it for elastic c10d rendezvous.

A worker that fails makes torchrun stop the others; the launcher then raises one
TrainingError naming the rank and the cause, and the run folder keeps its last checkpoint
for ``keel train --resume RUN --nproc N``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import dataclass

from rich.console import Console

from torchkeel.config import RunConfig, validate_config
from torchkeel.errors import ConfigError, KeelError, TrainingError

WORKER_EXIT_KEEL_ERROR = 2


@dataclass(frozen=True)
class LaunchOptions:
    nproc: int  # processes on this node
    nnodes: str = "1"  # "M", or "MIN:MAX" for elastic rendezvous
    node_rank: int | None = None
    rdzv_endpoint: str | None = None  # HOST:PORT of the rendezvous (the first node)

    def torchrun_args(self) -> list[str]:
        if self.rdzv_endpoint is None:
            if self.nnodes != "1" or self.node_rank not in (None, 0):
                raise ConfigError("--nnodes and --node-rank need --rdzv-endpoint HOST:PORT (the first node's address)")
            return ["--nproc-per-node", str(self.nproc), "--standalone"]
        args = ["--nproc-per-node", str(self.nproc), "--nnodes", self.nnodes, "--rdzv-endpoint", self.rdzv_endpoint]
        if self.node_rank is not None:
            return [*args, "--rdzv-backend", "static", "--node-rank", str(self.node_rank)]
        return [*args, "--rdzv-backend", "c10d", "--rdzv-id", "torchkeel"]


def launch(
    cfg: RunConfig,
    options: LaunchOptions,
    *,
    resume: str | None = None,
    progress: bool = True,
    model_code: str | None = None,
) -> None:
    """Run the training of ``cfg`` on ``options.nproc`` processes here (and on the other nodes)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous import RendezvousError
    from torch.distributed.run import get_args_parser, run

    from torchkeel.models import MODEL_TASKS
    from torchkeel.runs import resolve_run
    from torchkeel.tasks import TASKS
    from torchkeel.train.runtime import pick_device

    pick_device(cfg.train.device)  # an unavailable device fails here, before any process starts
    own_task = MODEL_TASKS.get(cfg.model.name)
    if own_task is not None and TASKS[own_task].loop != "fit":  # the GAN's loop is not data-parallel
        raise ConfigError(f"--nproc: model '{cfg.model.name}' trains by its own loop in one process; drop --nproc")
    if options.nnodes.isdigit():  # a fixed world size: check the batch split before starting
        world = options.nproc * int(options.nnodes)
        if cfg.train.batch_size % world:
            raise ConfigError(
                f"train.batch_size {cfg.train.batch_size} is the global batch and must divide evenly among "
                f"{world} processes; use a multiple of {world}"
            )
    if resume is not None:  # one absolute folder for every worker
        resume = str(resolve_run(resume, cfg.out_dir))
    worker = ["-m", "torchkeel.train.launch", "--config-json", json.dumps(cfg.to_dict())]
    worker += ["--resume", resume] if resume is not None else []
    worker += [] if progress else ["--quiet"]
    worker += ["--model-code", model_code] if model_code is not None else []
    args = get_args_parser().parse_args([*options.torchrun_args(), "--max-restarts", "0", *worker])
    # each worker gets its share of the cores (train.threads overrides): with more OpenMP
    # threads than cores, workers stall each other in spin-waits (20x slower on 2 busy cores)
    share = max(1, (os.cpu_count() or 1) // options.nproc)
    threads = cfg.train.threads if isinstance(cfg.train.threads, int) else share
    os.environ["OMP_NUM_THREADS"] = str(threads)  # inherited by the workers only
    # torchrun logs each failure at length; the TrainingError below says it in one line
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    try:
        run(args)
    except ChildFailedError as e:
        raise TrainingError(describe_failure(e, options.nproc)) from None
    except RendezvousError as e:
        raise TrainingError(f"distributed training could not start: rendezvous failed ({e})") from None


def describe_failure(error: object, nproc: int) -> str:
    """The root cause in one line: a worker's KeelError (its own message), else a rank killed
    by a signal, else the earliest failure. Ranks that failed only because a peer vanished
    ("connection closed by peer") are consequences, not causes."""
    failures = error.failures  # type: ignore[attr-defined]  # global rank -> ProcessFailure

    def priority(rank: int) -> tuple[int, float]:
        f = failures[rank]
        kind = 0 if f.exitcode == WORKER_EXIT_KEEL_ERROR else 1 if f.exitcode < 0 else 2
        return kind, f.timestamp

    rank = min(failures, key=priority)
    failure = failures[rank]
    # torchrun keeps the error file's "message" entry: a string, or {"message": ..., "extraInfo": ...}
    message = failure.message.get("message", "") if isinstance(failure.message, dict) else str(failure.message)
    if failure.exitcode == WORKER_EXIT_KEEL_ERROR and message:
        return message.split(": ", 1)[-1]  # "TrainingError: msg" -> msg
    if failure.exitcode < 0:
        cause = f"was killed by {failure.signal_name()}"
    else:
        stack = failure.error_file_data.get("message", {})
        if isinstance(stack, dict) and stack.get("extraInfo", {}).get("py_callstack"):
            print(stack["extraInfo"]["py_callstack"], file=sys.stderr)  # a bug: show where
        detail = "" if message.startswith("To enable traceback") else f": {message}"
        cause = f"exited with code {failure.exitcode}{detail}"
    return (
        f"distributed training failed: rank {rank} (pid {failure.pid}) {cause}; the other ranks were stopped. "
        f"The run folder keeps its last checkpoint: continue with `keel train --resume RUN --nproc {nproc}`"
    )


def worker_main(argv: list[str] | None = None) -> int:
    """What each of the N processes runs (torchrun sets RANK, WORLD_SIZE, ... for it)."""
    from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

    from torchkeel.experiment import train
    from torchkeel.train import distributed

    parser = argparse.ArgumentParser(prog="python -m torchkeel.train.launch")
    parser.add_argument("--config-json", required=True)
    parser.add_argument("--resume")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--model-code")
    args = parser.parse_args(argv)
    try:
        cfg = validate_config(json.loads(args.config_json))
        distributed.setup(cfg.train.device)
        console = Console(soft_wrap=True, quiet=not distributed.is_main())  # rank 0 narrates
        train(cfg, console, resume=args.resume, progress=not args.quiet, model_code=args.model_code)
        return 0
    except KeelError as e:
        ErrorHandler().record_exception(e)  # the launcher prints it once, as one line
        return WORKER_EXIT_KEEL_ERROR
    except Exception as e:  # noqa: BLE001 - e.g. a peer that died; the launcher reports the root cause
        ErrorHandler().record_exception(e)  # with its traceback, shown when this rank is the cause
        return 1
    finally:
        distributed.teardown()


if __name__ == "__main__":
    sys.exit(worker_main())
