"""Ragged targets (data/ragged.py) and a task built in the tests with them (ragged_task.py):
the same loop trains it, its batches collate once, and two processes give one process's result."""

from __future__ import annotations

from pathlib import Path

import pytest
import safetensors.torch
import torch
from ragged_task import tag_data

import torchkeel as keel
from torchkeel.data.loader import TensorLoader
from torchkeel.data.ragged import Ragged
from torchkeel.evaluate.metrics import evaluate
from torchkeel.tasks import TASKS


@pytest.fixture(autouse=True)
def _registry_restored():
    """The tasks these tests register are gone from the registry afterwards."""
    saved = dict(TASKS)
    yield
    TASKS.clear()
    TASKS.update(saved)


OPTIONS = {"epochs": 4, "batch_size": 40, "optimizer": "adam", "lr": 0.02, "threads": 1, "progress": False}


def test_ragged_gathers_match_python_lists():
    g = torch.Generator().manual_seed(1)
    items = [torch.randint(0, 9, (int(k),), generator=g) for k in torch.randint(0, 4, (30,), generator=g)]
    ragged = Ragged.from_list(items)
    index = torch.randperm(30, generator=g)[:12]
    picked = ragged.index_select(0, index)
    assert [t.tolist() for t in picked.items()] == [items[i].tolist() for i in index]
    assert [t.tolist() for t in ragged[3::4].items()] == [t.tolist() for t in items[3::4]]
    padded = picked.padded
    for row, i in zip(padded, index, strict=True):
        n = len(items[i])
        assert row[:n].tolist() == items[i].tolist() and (row[n:] == -1).all()
    with pytest.raises(ValueError, match="lengths sum"):
        Ragged(torch.zeros(3), torch.tensor([1, 1]))


def test_the_tensor_loader_batches_ragged_targets_by_the_same_permutation():
    data = tag_data(100)
    loader = TensorLoader(data.train.x, data.train.y, 16, seed=4)
    for x, y in loader.epoch(2):
        assert isinstance(y, Ragged) and len(y) == len(x)
    order = loader.order(2)[:16]
    _, first = next(iter(loader.epoch(2)))
    assert [t.tolist() for t in first.items()] == [t.tolist() for t in data.train.y.index_select(0, order).items()]


def test_a_ragged_target_task_trains_by_the_same_loop():
    data = tag_data()
    model = keel.models.build("mlp", data.spec)
    before = evaluate(model, data.test, data.spec, None, ["f1"])
    run = keel.fit(model, data, metrics=["f1", "exact_match"], **OPTIONS)
    after = run.evaluate("test", ["f1", "exact_match"])
    assert run.history[-1]["train/loss"] < run.history[0]["train/loss"]
    assert after["f1"] > max(0.8, before["f1"] + 0.2), (before, after)
    assert set(run.history[-1]) >= {"val/loss", "val/f1", "val/exact_match"}


def _rank(rank: int, world: int, folder: str) -> None:
    import torch.distributed as tdist
    from ragged_task import tag_data as make

    tdist.init_process_group("gloo", init_method=f"file://{Path(folder) / 'rendezvous'}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    data = make()
    torch.manual_seed(0)
    model = keel.models.build("mlp", data.spec)
    run = keel.fit(model, data, metrics=["f1"], **OPTIONS)
    if rank == 0:
        val = torch.tensor([run.history[-1]["val/f1"], run.history[-1]["val/loss"], run.history[-1]["train/loss"]])
        result = {"val": val} | {k: v.contiguous() for k, v in run.model.state_dict().items()}
        safetensors.torch.save_file(result, str(Path(folder) / f"world{world}.safetensors"))
    tdist.destroy_process_group()


# ~30 s: the default run trains a ragged task on one process (above) and shards tensors over two
# (tests/test_distributed.py); this is the two together
@pytest.mark.slow
def test_two_processes_train_a_ragged_target_task_as_one(tmp_path: Path):
    """Ragged batches shard across ranks like fixed ones (each rank gathers its share of the
    permutation) and the metrics' sums reduce across ranks: same weights and numbers."""
    import torch.multiprocessing

    torch.multiprocessing.spawn(_rank, args=(2, str(tmp_path / "two")), nprocs=2) if (
        tmp_path / "two"
    ).mkdir() is None else None
    torch.multiprocessing.spawn(_rank, args=(1, str(tmp_path / "one")), nprocs=1) if (
        tmp_path / "one"
    ).mkdir() is None else None
    one = safetensors.torch.load_file(str(tmp_path / "one" / "world1.safetensors"))
    two = safetensors.torch.load_file(str(tmp_path / "two" / "world2.safetensors"))
    for key, value in one.items():
        torch.testing.assert_close(two[key], value, rtol=1e-4, atol=1e-5, msg=key)


class _SelfLossNet(torch.nn.Module):
    """Like torchvision's detectors: in training mode, given targets, it returns its losses."""

    def __init__(self, spec):
        super().__init__()
        self.net = keel.models.build("mlp", spec)
        self.calls = 0

    def forward(self, x, targets=None):
        out = self.net(x)
        if self.training and targets is not None:
            self.calls += 1
            from ragged_task import multi_hot

            return {"bce": torch.nn.functional.binary_cross_entropy_with_logits(out, multi_hot(targets, out.shape[1]))}
        return out


def _model_loss(forward, x, y, loss_fn):
    losses = forward(x, y)
    return None, sum(losses.values())


def test_a_task_whose_model_returns_its_loss_trains_by_the_same_loop():
    import dataclasses

    from ragged_task import MULTILABEL

    TASKS.setdefault(
        "multilabel_self", dataclasses.replace(MULTILABEL, name="multilabel_self", forward_loss=_model_loss)
    )
    data = tag_data()
    data.spec.task = "multilabel_self"
    model = _SelfLossNet(data.spec)
    run = keel.fit(model, data, metrics=["f1"], **OPTIONS)
    assert model.calls == len(run.history) * -(-len(data.train) // OPTIONS["batch_size"])
    assert run.history[-1]["train/loss"] < run.history[0]["train/loss"] and run.evaluate("test", ["f1"])["f1"] > 0.8
