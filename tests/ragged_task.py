"""A task built in the tests, with ragged targets: multi-label tagging, where each sample has
a set of 0..C labels of its own size (a ``Ragged`` of label ids). Importing this module
``register`` adds it to ``tasks.TASKS`` as "multilabel"; it touches nothing else of torchkeel,
which is the point: a new task is a Task object and its data."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from torchkeel.data.bundle import DataBundle, DataSpec, Split
from torchkeel.data.ragged import Ragged
from torchkeel.tasks import TASKS, Task
from torchkeel.tasks.meter import TrainMeter


def multi_hot(y: Ragged, classes: int) -> torch.Tensor:
    """(B, C) 0/1 from padded label ids (padding -1 goes to an extra column, dropped)."""
    ids = y.padded.long()
    hot = torch.zeros(len(y), classes + 1, device=ids.device)
    hot.scatter_(1, torch.where(ids < 0, classes, ids), 1.0)
    return hot[:, :classes]


def build_loss(name: str, spec: Any, label_smoothing: float = 0.0, weights: Any = None):
    return lambda out, y: F.binary_cross_entropy_with_logits(out, multi_hot(y, out.shape[1]))


class TagAccumulator:
    """Micro-F1 and exact-set matches from running sums (tensors, so ranks can sum them)."""

    def __init__(self, spec: Any, names: list[str], device: torch.device, top_k: int = 3, *, details: bool = False):
        self.names = [n for n in names if n in ("f1", "exact_match")]
        self.sums = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum, count
        self.counts = torch.zeros(4, dtype=torch.float64, device=device)  # tp, fp, fn, exact
        self.has_loss = False

    @torch.no_grad()
    def update(self, out: torch.Tensor, y: Ragged, loss: torch.Tensor | None = None) -> None:
        if loss is not None:
            self.has_loss = True
            self.sums[0] += loss.double() * len(y)
        self.sums[1] += len(y)
        pred, true = out > 0, multi_hot(y, out.shape[1]) > 0.5
        exact = (pred == true).all(1).sum()
        self.counts += torch.stack([(pred & true).sum(), (pred & ~true).sum(), (~pred & true).sum(), exact]).double()

    def compute(self) -> dict[str, float]:
        tp, fp, fn, exact = self.counts.tolist()
        loss_sum, n = self.sums.tolist()
        values = {"f1": 2 * tp / max(2 * tp + fp + fn, 1), "exact_match": exact / max(n, 1)}
        return ({"loss": loss_sum / n} if self.has_loss else {}) | {k: values[k] for k in self.names}

    def details(self) -> dict[str, Any]:
        return {}


MULTILABEL = Task(
    name="multilabel",
    description="multi-label tagging",
    losses=("bce",),
    metrics=("f1", "exact_match"),
    key_metric="f1",
    lower_is_better=frozenset({"loss"}),
    uses=frozenset({"eval"}),
    output_size=lambda spec: spec.num_classes,
    build_loss=build_loss,
    accumulator=TagAccumulator,
    train_meter=lambda spec, device: TrainMeter(device, None),
    decode=lambda out, spec, k: [{"tags": [spec.classes[i] for i in row.nonzero().view(-1)]} for row in out > 0],
)


def register(tasks: dict = TASKS) -> None:
    """One registry line, as a built-in task has in tasks/__init__.py."""
    tasks["multilabel"] = MULTILABEL


def tag_data(n: int = 600, features: int = 8, classes: int = 5, seed: int = 0) -> DataBundle:
    """Each sample carries the labels whose direction it points along: 0 to ``classes`` of them.
    Registers the task first (in this process), so the data can be trained."""
    register()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=g)
    directions = torch.randn(features, classes, generator=g)
    tags = [row.nonzero().view(-1) for row in (x @ directions > 0.8)]
    spec = DataSpec("tags", "table", "multilabel", (features,), classes=[f"tag{i}" for i in range(classes)])
    y = Ragged.from_list(tags)
    cut = (n * 3) // 4
    val_cut = (n * 7) // 8
    return DataBundle(
        spec, Split(x[:cut], y[:cut]), Split(x[cut:val_cut], y[cut:val_cut]), Split(x[val_cut:], y[val_cut:])
    )
