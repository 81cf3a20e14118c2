import pytest
import torch

from torchkeel.data.bundle import DataSpec
from torchkeel.errors import ConfigError
from torchkeel.models import MODELS, build, count_parameters

SPECS = {
    "digits 8x8 grey": DataSpec("d", "image", "classification", (1, 8, 8), classes=list("0123456789")),
    "mnist 28x28 grey": DataSpec("m", "image", "classification", (1, 28, 28), classes=list("0123456789")),
    "cifar 32x32 colour": DataSpec("c", "image", "classification", (3, 32, 32), classes=list("abc")),
    "table regression": DataSpec("t", "table", "regression", (13,), targets=2),
    "table binary": DataSpec("b", "table", "binary", (30,), classes=["no", "yes"]),
    "text topics": DataSpec("x", "text", "classification", (12,), classes=list("abcd"), extra={"vocab_size": 50}),
}
ACCEPTS = {
    "mlp": [k for k in SPECS if SPECS[k].kind != "text"],
    "simple_cnn": [k for k in SPECS if SPECS[k].kind == "image"],
    "embedding_bag": [k for k in SPECS if SPECS[k].kind == "text"],
}


def test_every_model_is_covered():
    assert set(ACCEPTS) == set(MODELS)


@pytest.mark.parametrize(("name", "spec_name"), [(m, s) for m, specs in ACCEPTS.items() for s in specs])
def test_forward_backward_shapes(name, spec_name):
    spec = SPECS[spec_name]
    torch.manual_seed(0)
    model = build(name, spec)
    x = torch.randint(0, 50, (4, *spec.input_shape)) if spec.kind == "text" else torch.randn(4, *spec.input_shape)
    out = model(x)
    assert out.shape == (4, spec.output_size)
    out.square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert count_parameters(model) > 0


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "gelu", "silu", "tanh", "sigmoid"])
def test_activations_by_name(activation):
    model = build(
        {"name": "simple_cnn", "activation": activation, "dropout": 0.2, "batch_norm": True}, SPECS["digits 8x8 grey"]
    )
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_simple_cnn_flattened_size_follows_input():
    small = build("simple_cnn", SPECS["digits 8x8 grey"])
    large = build("simple_cnn", SPECS["cifar 32x32 colour"])
    # fc input = 64 channels x (H/4) x (W/4)
    assert small[2].in_features == 64 * 2 * 2 and large[2].in_features == 64 * 8 * 8


def test_image_model_refuses_tables_with_a_hint():
    with pytest.raises(ConfigError, match="use model 'mlp'"):
        build("simple_cnn", SPECS["table regression"])


def test_too_small_images_are_refused():
    tiny = DataSpec("tiny", "image", "classification", (1, 3, 3), classes=["a", "b"])
    with pytest.raises(ConfigError, match="at least 4x4"):
        build("simple_cnn", tiny)
