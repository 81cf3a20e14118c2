"""``Ensemble``: trained models whose class probabilities are averaged with fixed weights (the
one ``keel train --auto`` builds from its candidates, Caruana et al. 2004; auto_ensemble.py).
The ``ensemble`` builder, which rebuilds the members, is in models/__init__.py.

Each member keeps its own architecture, options and input: the members' DataSpecs are in
``spec.extra["members"]``. Text members that read text each their own way (their own
tokenisers) get their ids side by side in one row (data/tokenize.py ``ConcatTokenizer``),
``spec.member_widths`` columns each; members of other data share the one input. The output
is in the task's own form (log-probabilities, or one logit for two classes), so the loss,
metrics, predict, serve and export treat an ensemble as any classifier.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from torchkeel.data.bundle import DataSpec
from torchkeel.errors import ConfigError
from torchkeel.tasks import task_of


class Ensemble(nn.Module):
    def __init__(self, members: list[nn.Module], weights: list[float], widths: list[int] | None, spec: DataSpec):
        super().__init__()
        task = task_of(spec)
        if task.probabilities is None or task.from_probabilities is None:
            raise ConfigError(f"model 'ensemble' averages class probabilities; {task.description} has none")
        self.members = nn.ModuleList(members)
        self.register_buffer("weights", torch.tensor(weights, dtype=torch.float32) / sum(weights))
        self.widths = widths
        self.probabilities, self.from_probabilities = task.probabilities, task.from_probabilities

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.widths is None:
            parts = [x] * len(self.members)
        else:  # rows cut to the data's longest text lose trailing padding: put it back
            total = sum(self.widths)
            x = F.pad(x, (0, total - x.shape[1])) if x.shape[1] < total else x
            parts = list(x.split(self.widths, dim=1))
        members = zip(self.weights, self.members, parts, strict=True)
        mean = sum(w * self.probabilities(member(part)) for w, member, part in members)
        return self.from_probabilities(mean)
