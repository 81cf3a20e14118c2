"""The data sections of the config: new keys validated at load time, with key paths and the
closest valid name, and round trips through YAML."""

from __future__ import annotations

from pathlib import Path

import pytest

from torchkeel.config import load_config
from torchkeel.errors import ConfigError


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (["data.image.sze=32"], ["unknown key 'data.image.sze'", "did you mean 'data.image.size'"]),
        (["data.table.exlude=[id]"], ["did you mean 'data.table.exclude'"]),
        (["data.augment.cutot=4"], ["did you mean 'data.augment.cutout'"]),
        (["data.name=csv"], ["set data.path"]),
        (["data.name=image_folder"], ["set data.root"]),
        (["data.name=cifar01"], ["did you mean 'cifar10'"]),
        (["data.image.size=[0, 8]"], ["data.image.size", "positive"]),
        (["data.image.channels=gray"], ["data.image.channels", "'grey'"]),
        (["data.text.tokenizer=bpee"], ["data.text.tokenizer", "'bpe'"]),
        (["data.augment.rotate=-5"], ["data.augment.rotate"]),
        (["data.augment.translate=0.7"], ["data.augment.translate"]),
        (["data.task=clasification"], ["data.task", "'classification'"]),
    ],
)
def test_bad_data_keys(overrides: list[str], fragments: list[str]):
    with pytest.raises(ConfigError) as e:
        load_config(None, overrides)
    for fragment in fragments:
        assert fragment in str(e.value), (fragment, str(e.value))


def test_data_sections_round_trip(tmp_path: Path):
    cfg = load_config(
        None,
        [
            "data.name=hf:ag_news",
            "data.image.size=[24, 32]",
            "data.table.categorical=[SEX]",
            "data.text.column=[title, body]",
            "data.augment={crop: 2, rotate: 10, cutout: 4}",
        ],
    )
    assert cfg.data.name == "hf:ag_news" and cfg.data.image.size == (24, 32) and cfg.data.augment.flip is None
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(path) == cfg
