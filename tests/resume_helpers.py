"""Exact mid-run resume, checked the same way for every task."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def assert_resumes_bit_identically(data: Any, model_cfg: dict, augment: dict, run_dir: Path, epochs: int) -> None:
    """Train ``epochs`` epochs with a checkpoint each, then again from the first checkpoint
    (torch's RNG disturbed in between): the same history and the same final weights."""
    import torchkeel as keel_api
    from torchkeel.train import checkpoint as ckpt

    every_epoch = {"every_epochs": 1, "min_seconds": 0, "keep": 3}
    options = {"epochs": epochs, "seed": 2, "batch_size": 4, "checkpoint": every_epoch, "progress": False,
               "threads": 1, "augment": augment}  # fmt: skip
    torch.manual_seed(0)
    full = keel_api.fit(keel_api.models.build(model_cfg, data.spec), data, run_dir=run_dir, **options)
    first = ckpt.list_checkpoints(run_dir / "checkpoint")[0]
    torch.manual_seed(99)
    resumed = keel_api.fit(keel_api.models.build(model_cfg, data.spec), data, resume=first, **options)
    timeless = [[{k: v for k, v in r.items() if k != "seconds"} for r in run.history] for run in (full, resumed)]
    assert timeless[0] == timeless[1] and len(timeless[0]) == epochs
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
