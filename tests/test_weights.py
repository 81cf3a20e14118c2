"""Importing a user's .pt/.pth/.safetensors weights: plain state dicts load, nothing else
is unpickled, and a crafted malicious pickle runs no code."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
import torch
from rich.console import Console

import torchkeel as keel
from torchkeel.config import load_config
from torchkeel.errors import DataError, KeelError
from torchkeel.experiment import train
from torchkeel.weights import import_state_dict, load_weights


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return keel.models.build("mlp", keel.data.load("digits").spec)


def _assert_same(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), k


class RunsCode:
    """Unpickling this calls os.system: what a hostile .pt file does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_plain_state_dict_nested_and_prefixed_and_safetensors(tmp_path):
    source = _model(1)
    plain = tmp_path / "plain.pt"
    torch.save(source.state_dict(), plain)
    assert load_weights(_model(2), plain) == len(source.state_dict())
    target = _model(2)
    load_weights(target, plain)
    _assert_same(source, target)

    # a training script's checkpoint: the weights nested, keys prefixed by DDP's "module."
    nested = tmp_path / "trainer.pth"
    wrapped = {f"module.{k}": v for k, v in source.state_dict().items()}
    torch.save({"epoch": 3, "state_dict": wrapped, "lr": 0.1}, nested)
    target = _model(3)
    load_weights(target, nested)
    _assert_same(source, target)

    st = tmp_path / "w.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in source.state_dict().items()}, st)
    assert import_state_dict(st).keys() == source.state_dict().keys()


def test_weights_that_do_not_fit_say_which(tmp_path):
    state = _model().state_dict()
    first, last = list(state)[0], list(state)[-1]
    state[first] = torch.zeros(3, 3)
    del state[last]
    path = tmp_path / "other.pt"
    torch.save(state, path)
    with pytest.raises(DataError, match=rf"do not fit.*missing {last}.*shape file vs model: {first} \(3, 3\)"):
        load_weights(_model(), path)


def test_a_whole_pickled_model_is_refused_with_the_fix(tmp_path):
    path = tmp_path / "model.pt"
    torch.save(_model(), path)  # the whole nn.Module, not its state dict
    with pytest.raises(DataError, match=r"holds Python objects .*torch.save\(model.state_dict\(\), path\)"):
        import_state_dict(path)


def test_a_malicious_pickle_runs_no_code(tmp_path):
    marker = tmp_path / "pwned"
    as_pt = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(2), "payload": RunsCode(marker)}, as_pt)
    as_pickle = tmp_path / "evil.pth"
    as_pickle.write_bytes(pickle.dumps({"weight": RunsCode(marker)}))

    with pytest.raises(DataError, match="posix.system|nt.system"):
        import_state_dict(as_pt)
    with pytest.raises(DataError, match="does not unpickle"):
        import_state_dict(as_pickle)
    assert not marker.exists()

    # the control: the same file loaded the unsafe way does run its code
    unsafe = f"import pickle; pickle.load(open({str(as_pickle)!r}, 'rb'))"
    subprocess.run([sys.executable, "-c", unsafe], check=False, capture_output=True)
    assert marker.exists()


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not weights at all",
        b"PK\x03\x04" + b"\x00" * 100,
        b"\x80\x04\x95" + b"\xff" * 20,
        b"\x20" + b"\x00" * 7 + b'{"a": {',
    ],
)
def test_damaged_or_foreign_files_are_data_errors(tmp_path, content):
    path = tmp_path / "w.pt"
    path.write_bytes(content)
    with pytest.raises(DataError):
        import_state_dict(path)


def test_config_init_from_starts_training_from_those_weights(tmp_path):
    source = keel.models.build("simple_cnn", keel.data.load("digits").spec)
    weights = tmp_path / "pretrained.pt"
    torch.save(source.state_dict(), weights)
    # a learning rate so small that one epoch leaves the weights where they started
    overrides = [f"model.init_from={weights}", "train.optimizer.lr=1e-12", "train.epochs=1"]
    cfg = load_config(None, [*overrides, f"out_dir={tmp_path / 'runs'}"])
    out = io.StringIO()
    run_dir = train(cfg, Console(file=out, width=200), progress=False)
    assert f"initial weights from {weights}" in out.getvalue()
    trained = safetensors.torch.load_file(run_dir / "model.safetensors")
    for k, v in source.state_dict().items():
        assert torch.allclose(trained[k], v, atol=1e-6), k
    assert "init_from" not in (run_dir / "model.json").read_text()  # the run's own weights replace it

    hostile = tmp_path / "evil.pt"
    torch.save({"payload": RunsCode(tmp_path / "pwned")}, hostile)
    cfg = load_config(None, [f"model.init_from={hostile}", f"out_dir={tmp_path / 'runs2'}"])
    with pytest.raises(KeelError, match="holds Python objects"):
        train(cfg, Console(file=io.StringIO()), progress=False)
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "runs2").exists()
