"""NaN/inf in the loss or the gradients: stop naming the step, or skip and count (on_nan: skip)."""

import pytest
import torch
from torch import nn

import torchkeel as keel
from torchkeel.data.bundle import DataBundle, Split
from torchkeel.data.loader import TensorLoader
from torchkeel.errors import TrainingError
from torchkeel.train import checkpoint as ckpt

BATCH = 32


@pytest.fixture(scope="module")
def digits():
    return keel.data.load("digits")


def _poisoned(digits, sample: int) -> DataBundle:
    x = digits.train.x.clone()
    x[sample] = float("nan")
    return DataBundle(digits.spec, Split(x, digits.train.y), digits.val, digits.test)


def _batch_holding(sample: int, n: int, epoch: int, seed: int = 0) -> int:
    """The batch index (from 0) that holds ``sample`` in ``epoch``, from the loader's own order."""
    order = TensorLoader(torch.zeros(n), torch.zeros(n), BATCH, seed=seed).order(epoch)
    return int((order == sample).nonzero()) // BATCH


class SqrtAtZero(nn.Module):
    """A linear classifier plus sqrt(p) * 0 with p = 0: the output and loss stay finite but
    d/dp = 0 * 1/(2 sqrt(0)) = nan, so only the gradient is non-finite."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        self.p = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return self.linear(x) + torch.sqrt(self.p) * 0.0


def test_nan_loss_names_the_exact_step_and_keeps_the_last_good_checkpoint(digits, tmp_path):
    n = len(digits.train)
    # a sample that falls mid-epoch, so that good checkpoints exist before it
    sample = next(s for s in range(n) if 5 <= _batch_holding(s, n, epoch=0) + 1 <= 30)
    bad_step = _batch_holding(sample, n, epoch=0) + 1
    checkpoints = {"every_steps": 1, "min_seconds": 3600, "keep": 1000}
    model = keel.models.build("mlp", digits.spec)
    with pytest.raises(TrainingError, match=f"loss became nan at step {bad_step} ") as err:
        keel.fit(model, _poisoned(digits, sample), epochs=1, run_dir=tmp_path, checkpoint=checkpoints, progress=False)
    assert "learning rate" in str(err.value) and "on_nan: skip" in str(err.value)
    saved = ckpt.list_checkpoints(tmp_path / "checkpoint")
    assert [int(p.stem.split("-")[1]) for p in saved] == list(range(1, bad_step))  # none from the bad step on
    assert f"{saved[-1].name}, is kept" in str(err.value)
    tensors = ckpt.read_checkpoint(saved[-1]).tensors
    assert all(torch.isfinite(v).all() for v in tensors.values() if v.is_floating_point())


def test_nan_gradient_with_a_finite_loss_is_caught_at_its_step(digits):
    with pytest.raises(TrainingError, match="gradients became non-finite at step 1 "):
        keel.fit(SqrtAtZero(), digits, epochs=1, progress=False)


def test_on_nan_skip_skips_and_counts(digits):
    sample, epochs = 7, 3
    torch.manual_seed(0)
    run = keel.fit(
        keel.models.build("mlp", digits.spec), _poisoned(digits, sample), epochs=epochs, on_nan="skip", progress=False
    )
    assert run.nan_skips == epochs  # the poisoned sample is in one batch per epoch
    assert [r["train/nan_skips"] for r in run.history] == [1, 2, 3]
    assert all(torch.isfinite(v).all() for v in run.model.state_dict().values())
    assert all(torch.isfinite(torch.tensor(r["train/loss"])) for r in run.history)
    assert run.evaluate("test")["accuracy"] > 0.8


def test_on_nan_skip_gives_up_when_every_step_is_bad(digits):
    all_nan = DataBundle(digits.spec, Split(digits.train.x * float("nan"), digits.train.y), None, digits.test)
    with pytest.raises(TrainingError, match="skipping cannot help"):
        keel.fit(keel.models.build("mlp", digits.spec), all_nan, epochs=5, on_nan="skip", progress=False)


def test_parameters_without_gradients_on_some_steps(digits):
    class SometimesUnused(nn.Module):
        """Its second head only gets a gradient on odd calls, like a conditional branch."""

        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
            self.extra = nn.Linear(10, 10)
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            out = self.body(x)
            return out + self.extra(out) if self.calls % 2 else out

    run = keel.fit(SometimesUnused(), digits, epochs=1, log_every=3, progress=False)
    assert len(run.history) == 1
