from pathlib import Path

import pytest
import yaml

from torchkeel.config import RunConfig, load_config
from torchkeel.errors import ConfigError


def test_defaults_are_the_default_recipe():
    cfg = load_config()
    assert cfg.data.name == "digits" and cfg.model.name == "simple_cnn"
    assert cfg.model.options()["channels"] == (32, 64)  # builder defaults written out


def test_yaml_file_then_overrides_then_shortcuts(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("seed: 3\ntrain: {epochs: 4, optimizer: {name: sgd, lr: 0.1}}\nmodel: {name: mlp, hidden: [32]}\n")
    cfg = load_config(path, ["train.optimizer.lr=0.01", "train.optimizer.nesterov=true"], {"seed": 7})
    assert cfg.seed == 7 and cfg.train.epochs == 4
    assert cfg.train.optimizer.name == "sgd" and cfg.train.optimizer.lr == 0.01
    assert cfg.train.optimizer.nesterov is True
    assert cfg.model.options()["hidden"] == (32,)


def test_shortcut_to_another_model_drops_old_options(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("model: {name: mlp, hidden: [32]}\n")
    cfg = load_config(path, shortcuts={"model.name": "simple_cnn"})
    assert cfg.model.name == "simple_cnn" and "hidden" in cfg.model.options()
    assert cfg.model.options()["hidden"] == 128


def test_round_trip_through_yaml(tmp_path: Path):
    cfg = load_config(None, ["train.epochs=3", "model.dropout=0.25", "train.early_stopping.patience=2"])
    path = tmp_path / "saved.yaml"
    path.write_text(cfg.to_yaml())
    again = load_config(path)
    assert again == cfg
    assert yaml.safe_load(path.read_text())["train"]["early_stopping"]["patience"] == 2


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (["train.optimzer.lr=1"], ["unknown key 'train.optimzer'", "did you mean 'train.optimizer'"]),
        (["trian.epochs=1"], ["unknown key 'trian'", "'train'"]),
        (["train.epochs=-1"], ["train.epochs", "greater than or equal to 1"]),
        (["train.epochs=ten"], ["train.epochs", "integer"]),
        (["train.optimizer.lr=0"], ["train.optimizer.lr", "greater than 0"]),
        (["train.optimizer.name=adm"], ["train.optimizer.name", "did you mean 'adam'"]),
        (["train.schedule.name=cosin"], ["did you mean 'cosine'"]),
        (["train.loss=cross_entropi"], ["did you mean 'cross_entropy'"]),
        (["data.name=digts"], ["data.name", "did you mean 'digits'"]),
        (["model.name=simple_cn"], ["model.name", "did you mean 'simple_cnn'"]),
        (["model.hiden=3"], ["unknown option 'hiden'", "did you mean 'hidden'"]),
        (["model.dropout=1.5"], ["dropout", "less than 1"]),
        (["model.activation=rellu"], ["did you mean 'relu'"]),
        (["eval.metrics=[acuracy]"], ["did you mean 'accuracy'"]),
        (["data.val_fraction=0.5", "data.test_fraction=0.45"], ["at least 10% for training"]),
        (["train.device=tpu"], ["train.device", "unknown device"]),
        (["nokey"], ["KEY=VALUE"]),
    ],
)
def test_invalid_configs_name_the_key(overrides, fragments):
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_bad_yaml_files(tmp_path: Path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: {epochs: 3\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listy)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_every_shipped_config_is_valid():
    configs = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))
    assert configs, "configs/ holds at least the default recipe"
    for path in configs:
        assert isinstance(load_config(path), RunConfig), path
