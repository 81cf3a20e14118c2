"""Config sections of the model families: validated, written out, refused where they do not apply."""

import pytest

from torchkeel.config import load_config
from torchkeel.errors import ConfigError


def test_family_sections_validate_and_round_trip(tmp_path):
    cfg = load_config(
        None,
        ["data.name=sine_series", "data.series.window=16", "data.series.horizon=3", "model.name=lstm"],
    )
    assert cfg.data.series.window == 16 and cfg.model.options()["hidden"] == 128
    again = tmp_path / "c.yaml"
    again.write_text(cfg.to_yaml())
    assert load_config(again) == cfg
    gan = load_config(None, ["model.name=dcgan", "train.gan.lr=1.0e-4", "model.conditional=true"])
    assert gan.train.gan.betas == (0.5, 0.999) and gan.model.options() == {
        "latent_dim": 64,
        "width": 64,
        "conditional": True,
    }
    tuned = load_config(None, ["model.name=resnet18", "model.freeze_backbone=true", "train.finetune.epochs=2"])
    assert tuned.train.finetune.lr == 1e-4


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["train.gan.lr=0.1"], "train.gan is for GAN models (dcgan), not 'simple_cnn'"),
        (["model.name=dcgan", "train.finetune.epochs=1"], "train.finetune is for supervised models"),
        (["data.series.window=8"], "data.series is for the series data sets"),
        (["data.name=sine_series", "data.series.windw=8"], "did you mean 'data.series.window'"),
        (["model.name=dcgan", "train.gan.betas=[0.5]"], "train.gan.betas"),
        (["model.name=resnet18", "train.finetune.lr=0"], "train.finetune.lr"),
        (["model.name=lenet5", "model.pool=min"], "model 'lenet5' option 'pool'"),
    ],
)
def test_family_sections_refuse_what_does_not_apply(overrides, fragment):
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    assert fragment in str(info.value) and "\n" not in str(info.value)
