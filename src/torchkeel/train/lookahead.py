"""Lookahead averaging of the weights, as airbench uses it (an EMA that the weights are pulled
back to; Zhang et al. 2019, "Lookahead Optimizer: k steps forward, 1 step back";
github.com/KellerJordan/cifar10-airbench, airbench94.py ``LookaheadState``).

Every ``every`` optimiser steps the slow weights move toward the fast ones,
``slow += (1 - decay_t) * (fast - slow)``, and the fast weights are reset to the slow ones. The
decay ramps up as ``decay * (t / T)**3``: early in training the average follows the weights,
late in training it smooths them. After the last step the weights are the slow weights.

The slow weights live in the optimiser's per-parameter state (key ``lookahead_slow``), so
checkpoints save them and an exact resume restores them with no extra machinery.
"""

from __future__ import annotations

import torch

from torchkeel.config import LookaheadConfig

SLOW = "lookahead_slow"


class Lookahead:
    def __init__(self, cfg: LookaheadConfig, optimizer: torch.optim.Optimizer, total_steps: int):
        self.cfg, self.optimizer, self.total_steps = cfg, optimizer, max(total_steps, 1)

    @torch.no_grad()
    def step(self, global_step: int) -> None:
        """After optimiser step ``global_step`` (counted from 1)."""
        if global_step % self.cfg.every:
            return
        decay = self.cfg.decay * min(global_step / self.total_steps, 1.0) ** 3
        for p, state in self._params():
            slow = state.get(SLOW)
            if slow is None:  # first sync: the average starts at the weights
                state[SLOW] = p.detach().clone()
                continue
            slow.lerp_(p, 1.0 - decay)
            p.copy_(slow)

    @torch.no_grad()
    def finish(self) -> None:
        """The final weights are the slow weights (airbench: ``update(model, decay=1.0)``)."""
        for p, state in self._params():
            if SLOW in state:
                p.copy_(state[SLOW])

    def _params(self):
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                state = self.optimizer.state[p]
                # a parameter without optimiser state has never been stepped; adding a key
                # now would make Adam skip its lazy state initialisation
                if state:
                    yield p, state
