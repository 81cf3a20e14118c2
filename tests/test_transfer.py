"""torchvision ResNets: pretrained weights from torch's hub cache, a frozen backbone, and
the finetune phase that unfreezes it at a lower learning rate."""

import json
from pathlib import Path

import pytest
import safetensors.torch
import torch
import torchvision
import yaml
from conftest import assert_one_line_error, keel
from rich.console import Console

import torchkeel as keel_pkg
from torchkeel.config import FinetuneConfig, load_config
from torchkeel.data.bundle import DataBundle, DataSpec, Split
from torchkeel.errors import ConfigError
from torchkeel.experiment import train
from torchkeel.train.finetune import finetune

COLOUR = DataSpec("c", "image", "classification", (3, 32, 32), classes=list("abcde"))
GREY = DataSpec("g", "image", "classification", (1, 28, 28), classes=list("0123456789"))


@pytest.fixture
def hub_with_resnet18(tmp_path, monkeypatch) -> dict[str, torch.Tensor]:
    """torch's hub cache holding a resnet18 weights file under the name torchvision expects
    (random weights, written in the format torchvision downloads: a torch.save'd state dict)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    torch.manual_seed(1)
    state = torchvision.models.resnet18(weights=None).state_dict()
    url = torchvision.models.ResNet18_Weights.DEFAULT.url
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    folder.mkdir(parents=True)
    torch.save(state, folder / url.rsplit("/", 1)[1])
    return state


def test_pretrained_weights_load_into_the_backbone(hub_with_resnet18):
    model = keel_pkg.models.build({"name": "resnet18", "pretrained": True}, COLOUR)
    backbone = model.backbone.state_dict()
    for key, value in hub_with_resnet18.items():
        if not key.startswith("fc."):
            torch.testing.assert_close(backbone[key], value, msg=key)
    assert model.head[-1].out_features == 5  # a new head for the data's classes


def test_grey_input_sums_the_pretrained_rgb_filters(hub_with_resnet18):
    model = keel_pkg.models.build({"name": "resnet18", "pretrained": True}, GREY)
    expected = hub_with_resnet18["conv1.weight"].sum(1, keepdim=True)  # grey = R = G = B
    torch.testing.assert_close(model.backbone.conv1.weight, expected)
    image = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(
        model.backbone.conv1(image),
        torch.nn.functional.conv2d(image.repeat(1, 3, 1, 1), hub_with_resnet18["conv1.weight"], stride=2, padding=3),
    )


def test_missing_weights_offline_are_one_clear_error(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")  # torch cannot create its hub cache here, as when a download fails
    monkeypatch.setenv("TORCH_HOME", str(blocker))
    with pytest.raises(ConfigError, match="cannot load the pretrained ImageNet weights") as info:
        keel_pkg.models.build({"name": "resnet34", "pretrained": True}, COLOUR)
    assert "resnet34-" in str(info.value) and "model.pretrained=false" in str(info.value)
    proc = keel("train", "--model", "resnet18", "--set", "model.pretrained=true", cwd=tmp_path)
    assert_one_line_error(proc, "pretrained", "model.pretrained=false")
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


@pytest.fixture(scope="module")
def small_digits() -> DataBundle:
    data = keel_pkg.data.load("digits")
    return DataBundle(data.spec, Split(data.train.x[:320], data.train.y[:320]), None, data.test)


def test_freeze_then_finetune(small_digits):
    torch.manual_seed(0)
    model = keel_pkg.models.build({"name": "resnet18", "freeze_backbone": True}, small_digits.spec)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    run = keel_pkg.fit(model, small_digits, epochs=1, batch_size=64, threads=1, progress=False)
    after = model.state_dict()
    for key in before:
        if key.startswith("backbone."):  # weights and BatchNorm running statistics untouched
            assert torch.equal(before[key], after[key]), key
    assert not torch.equal(before["head.1.weight"], after["head.1.weight"])

    frozen_copy = {k: v.clone() for k, v in after.items()}
    tuned = finetune(run, FinetuneConfig(epochs=1, lr=1e-4), progress=False)
    assert all(p.requires_grad for p in model.parameters())
    assert not torch.equal(
        frozen_copy["backbone.layer1.0.conv1.weight"], model.state_dict()["backbone.layer1.0.conv1.weight"]
    )
    assert [r.get("phase") for r in tuned.history] == [None, "finetune"]
    assert tuned.history[1]["lr"] <= 1e-4 < tuned.history[0]["lr"]


def test_frozen_backbone_stays_in_eval_mode_while_training():
    model = keel_pkg.models.build({"name": "resnet18", "freeze_backbone": True}, COLOUR).train()
    assert model.training and not model.backbone.training and model.head.training
    model.requires_grad_(True)
    assert model.train().backbone.training


def test_train_runs_the_finetune_phase_into_the_run_folder(tmp_path):
    overrides = ["train.epochs=1", "train.finetune.epochs=1", "train.threads=1", f"out_dir={tmp_path}"]
    run = train(load_config(None, overrides), Console(quiet=True), progress=False)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs"] == 2
    records = [json.loads(line) for line in (run / "finetune" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if "val/accuracy" in r] == [1]
    assert list((run / "finetune" / "checkpoint").glob("*.safetensors"))
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["finetune"] == {"epochs": 1, "lr": 1e-4}

    # interrupted after both phases' last checkpoints: resuming rebuilds the same final model
    finished = safetensors.torch.load_file(run / "model.safetensors")
    for name in ("model.safetensors", "model.json", "summary.json"):
        (run / name).unlink()
    written = (run / "finetune" / "metrics.jsonl").stat().st_mtime_ns
    train(load_config(None, overrides), Console(quiet=True), resume=str(run), progress=False)
    resumed = safetensors.torch.load_file(run / "model.safetensors")
    assert (run / "finetune" / "metrics.jsonl").stat().st_mtime_ns == written  # continued, not trained again
    assert finished.keys() == resumed.keys() and all(torch.equal(finished[k], resumed[k]) for k in finished)


@pytest.mark.slow
def test_keel_train_with_finetune_phase(tmp_path):
    keel(
        "train", "--model", "resnet18", "--epochs", "1", "--set", "model.freeze_backbone=true",
        "--set", "train.finetune.epochs=1", "--set", "train.threads=1", "-q", cwd=tmp_path, check=True,
    )  # fmt: skip
    run = (tmp_path / "runs" / "latest").resolve()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs"] == 2
    finetune_metrics = [json.loads(line) for line in (run / "finetune" / "metrics.jsonl").read_text().splitlines()]
    assert any("val/accuracy" in r for r in finetune_metrics)
    assert list((run / "finetune" / "checkpoint").glob("*.safetensors"))
