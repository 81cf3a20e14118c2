import dataclasses
import tempfile
from pathlib import Path

import pytest
import torch

from torchkeel.data.bundle import DataSpec
from torchkeel.errors import ConfigError
from torchkeel.models import ACCEPTS, DENSE, DETECTORS, KINDS, MODELS, build, count_parameters, describe
from torchkeel.models.gan import GAN
from torchkeel.tasks import task_of

TEXT_EXTRA = {"vocab_size": 50, "pad_index": 0}
SOUND = {"sample_rate": 8000, "max_seconds": 10.0}
SPECS = {
    "digits 8x8 grey": DataSpec("d", "image", "classification", (1, 8, 8), classes=list("0123456789")),
    "mnist 28x28 grey": DataSpec("m", "image", "classification", (1, 28, 28), classes=list("0123456789")),
    "cifar 32x32 colour": DataSpec("c", "image", "classification", (3, 32, 32), classes=list("abc")),
    "table regression": DataSpec("t", "table", "regression", (13,), targets=2),
    "table binary": DataSpec("b", "table", "binary", (30,), classes=["no", "yes"]),
    "text 3 classes": DataSpec("x", "text", "classification", (20,), classes=list("abc"), extra=TEXT_EXTRA),
    "text binary": DataSpec("y", "text", "binary", (12,), classes=["neg", "pos"], extra=TEXT_EXTRA),
    "series 3 features, horizon 4": DataSpec("s", "series", "regression", (16, 3), targets=4),
    "sound 0.5 s at 8 kHz": DataSpec("a", "audio", "classification", (2, 4000), classes=list("abc"), extra=SOUND),
    "speech 0.5 s at 8 kHz": DataSpec(
        "sp", "audio", "speech_recognition", (2, 4000), extra={**SOUND, "alphabet": " ab"}
    ),
    "parallel text": DataSpec(
        "pairs", "text", "translation", (12,), extra={"vocab_size": 50, "target_vocab_size": 50, "joint": True}
    ),
    "masks 24x32 colour": DataSpec("seg", "image", "segmentation", (3, 24, 32), classes=list("abc")),
    "masks 20x20 grey": DataSpec("seg1", "image", "segmentation", (1, 20, 20), classes=["bg", "fg"]),
    "boxes 64x96 colour": DataSpec("det", "image", "detection", (3, 64, 96), classes=["a", "b"]),
    "text corpus": DataSpec(
        "corpus", "text", "language_model", (12,), extra={"vocab_size": 50, "block_size": 12, "chars_per_token": 1.0}
    ),
}
# causal language models take a corpus (next-token targets), and the other models do not
LANGUAGE_MODELS = {"gpt", "pretrained_lm"}
# CTC models take clips with transcripts and give per-frame outputs (and the frame mask)
CTC_MODELS = {"ctc_gru"}
# translation models take parallel text: a source and a target sentence per sample
SEQ2SEQ_MODELS = {"transformer_seq2seq", "gru_seq2seq"}
# the torchvision ResNets cost seconds each on 2 cores: ResNet-18 covers the grey-input
# adaptation, the deeper two one colour size
ONLY = {"resnet34": ["cifar 32x32 colour"], "resnet50": ["cifar 32x32 colour"]}
CASES = [
    (name, spec_name)
    for name in MODELS
    for spec_name, spec in SPECS.items()
    if spec.kind in ACCEPTS[name]
    and spec_name in ONLY.get(name, SPECS)
    and (name in LANGUAGE_MODELS) == ("block_size" in spec.extra)
    and (name in CTC_MODELS) == ("alphabet" in spec.extra)
    and (name in SEQ2SEQ_MODELS) == ("target_vocab_size" in spec.extra)
    and (name in DENSE) == (spec.task == "segmentation")
    and (name in DETECTORS) == (spec.task == "detection")
    and (name != "ensemble" or task_of(spec).probabilities is not None)  # it averages class probabilities
]
# an ensemble of two models of the kind (text: on two tokenisations side by side)
ENSEMBLE_MEMBER = {"image": "simple_cnn", "table": "mlp", "text": "embedding_bag", "audio": "m5"}


def _input(spec: DataSpec, batch: int = 4) -> torch.Tensor:
    if spec.kind == "audio":  # a waveform and its mask: clips of 0.5, 0.4, 0.3 and 0.2 s
        x = torch.randn(batch, *spec.input_shape)
        x[:, 1] = (torch.arange(spec.input_shape[1]) < torch.tensor([4000, 3200, 2400, 1600])[:batch, None]).float()
        return x
    if spec.kind != "text":
        return torch.randn(batch, *spec.input_shape)
    x = torch.randint(1, spec.extra["vocab_size"], (batch, *spec.input_shape))
    x[1, 5:] = 0  # a short text, right-padded
    x[2, :] = 0  # an empty one
    return x


def _build(name: str, spec: DataSpec) -> torch.nn.Module:
    if name == "pretrained_text":
        return _pretrained_text(spec)
    if name == "pretrained_lm":
        return _pretrained_lm(spec)
    if name == "ensemble":
        return _ensemble(spec)
    options = {"name": name, "target": "custom_nets:AnyNet"} if name == "custom" else name
    return build(options, spec)


def _ensemble(spec: DataSpec) -> torch.nn.Module:
    extra = dict(spec.extra)
    if spec.kind == "text":  # each member reads its own columns of the row
        extra["widths"] = widths = [spec.input_shape[0] - 4, 4]
        specs = [dataclasses.replace(spec, input_shape=(w,)) for w in widths]
    else:
        specs = [spec, spec]
    extra["members"] = [s.to_dict() for s in specs]
    member = {"name": ENSEMBLE_MEMBER[spec.kind]}
    options = {"name": "ensemble", "members": [member, member], "weights": [0.75, 0.25]}
    return build(options, dataclasses.replace(spec, extra=extra))


def _pretrained_text(spec: DataSpec) -> torch.nn.Module:
    """pretrained_text on a tiny BERT folder (offline), its ids covering the spec's vocabulary."""
    pytest.importorskip("transformers")
    from hf_helpers import write_tiny_bert

    folder = write_tiny_bert(Path(tempfile.mkdtemp()), [], min_vocab=spec.extra["vocab_size"])
    tokenizer = {"type": "pretrained", "source": str(folder), "max_length": 64}
    spec = dataclasses.replace(spec, extra={**spec.extra, "tokenizer": tokenizer})
    return build({"name": "pretrained_text", "encoder": str(folder), "finetune": True}, spec)


def _pretrained_lm(spec: DataSpec) -> torch.nn.Module:
    """pretrained_lm on a tiny GPT-2 folder (offline) tokenising the corpus."""
    pytest.importorskip("transformers")
    from hf_helpers import write_tiny_gpt2

    folder = str(write_tiny_gpt2(Path(tempfile.mkdtemp())))
    tokenizer = {"type": "pretrained_lm", "source": folder}
    spec = dataclasses.replace(spec, extra={**spec.extra, "tokenizer": tokenizer})
    return build({"name": "pretrained_lm", "source": folder}, spec)


def test_every_model_is_registered_with_its_kinds_and_a_description():
    assert set(ACCEPTS) == set(MODELS)
    for name, kinds in ACCEPTS.items():
        assert kinds and set(kinds) <= set(KINDS), name
        assert 10 < len(describe(name)) < 110, name
    covered = {name for name, _ in CASES}
    assert covered == set(MODELS)


@pytest.mark.parametrize(("name", "spec_name"), CASES)
def test_forward_backward_shapes(name, spec_name):
    spec = SPECS[spec_name]
    torch.manual_seed(0)
    model = _build(name, spec)
    x = _input(spec)
    if isinstance(model, GAN):
        images = model(model.noise(4))  # generator: noise -> images in [-1, 1]
        assert images.shape == (4, *spec.input_shape) and images.abs().max() <= 1
        out = model.discriminator(images)  # one logit per image, gradient through both networks
        assert out.shape == (4,)
    elif name in CTC_MODELS:
        out = model(x)  # (B, frames, blank + alphabet + mask)
        assert out.shape[0] == 4 and out.shape[2] == spec.output_size and out.shape[1] > 0
    elif name in SEQ2SEQ_MODELS:  # teacher forcing: next-token logits at every target position
        tgt = torch.randint(1, 50, (4, 7))
        out = model(x, tgt)
        assert out.shape == (4, 7, spec.extra["target_vocab_size"])
    elif name in LANGUAGE_MODELS:
        out = model(x)  # next-token logits at every position
        assert out.shape == (4, *spec.input_shape, spec.extra["vocab_size"])
    elif name in DENSE:  # segmentation: class logits for every pixel, at the input's size
        out = model(x)
        assert out.shape == (4, spec.output_size, *spec.input_shape[1:])
    elif name in DETECTORS:  # evaluated: (B, D, 6) rows of box, score, class; trained: its summed losses
        rows = model.eval()(x)
        assert rows.shape == (4, model.detections, 6) and torch.isfinite(rows).all()
        targets = [{"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0]]), "labels": torch.tensor([i % 2])} for i in range(4)]
        out = model.train()(x, targets)  # a scalar loss
        assert out.ndim == 0
    else:
        out = model(x)
        assert out.shape == (4, spec.output_size)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert count_parameters(model) > 0


@pytest.mark.parametrize("name", [m for m in MODELS if m != "custom"])
def test_models_refuse_data_they_cannot_take(name):
    refused = [s for s in SPECS.values() if s.kind not in ACCEPTS[name]]
    for spec in refused:
        with pytest.raises(ConfigError, match=f"model '{name}' takes .* data; data '{spec.name}' is {spec.kind}"):
            build(name, spec)


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


def test_lenet5_has_the_papers_geometry_on_28_and_32_px():
    for spec_name in ("mnist 28x28 grey", "cifar 32x32 colour"):
        model = build("lenet5", SPECS[spec_name])
        linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
        assert [(m.in_features, m.out_features) for m in linears[:2]] == [(400, 120), (120, 84)]


def test_resnet_widths_and_depths():
    spec = SPECS["cifar 32x32 colour"]
    nine, eighteen = build("resnet", spec), build({"name": "resnet", "depth": 18}, spec)
    # Page's ResNet-9 has 6.57M parameters and the CIFAR ResNet-18 11.17M (with 10 classes)
    assert abs(count_parameters(nine) - 6.57e6) < 0.02e6
    assert abs(count_parameters(eighteen) - 11.17e6) < 0.02e6
    narrow = build({"name": "resnet", "width": 16}, spec)
    assert count_parameters(narrow) < count_parameters(nine) / 10


def test_models_fit_the_task_per_pixel_or_per_image():
    with pytest.raises(ConfigError, match="wants a class for every pixel .* use model 'unet'"):
        build("simple_cnn", SPECS["masks 24x32 colour"])
    with pytest.raises(ConfigError, match="wants one output per sample .* 'simple_cnn'"):
        build("unet", SPECS["cifar 32x32 colour"])


def test_unet_with_the_lite0_encoder_outputs_the_input_size():
    pytest.importorskip("timm")
    model = build({"name": "unet", "encoder": "efficientnet_lite0"}, SPECS["masks 24x32 colour"])
    assert model(torch.randn(2, 3, 24, 32)).shape == (2, 3, 24, 32)
    grey = build({"name": "unet", "encoder": "efficientnet_lite0"}, SPECS["masks 20x20 grey"])
    assert grey(torch.randn(2, 1, 20, 20)).shape == (2, 2, 20, 20)


def test_image_model_refuses_tables_with_a_hint():
    with pytest.raises(ConfigError, match="use model 'mlp'"):
        build("simple_cnn", SPECS["table regression"])


def test_too_small_images_are_refused():
    tiny = DataSpec("tiny", "image", "classification", (1, 3, 3), classes=["a", "b"])
    for name, fragment in [("simple_cnn", "at least 4x4"), ("lenet5", "at least 4x4"), ("dcgan", "at least 4 px")]:
        with pytest.raises(ConfigError, match=fragment):
            build(name, tiny)


def test_options_are_checked_against_the_builder():
    text = SPECS["text 3 classes"]
    with pytest.raises(ConfigError, match="did you mean 'hidden'"):
        build({"name": "lstm", "hiden": 8}, text)
    with pytest.raises(ConfigError, match="pooling"):
        build({"name": "gru", "pooling": "median"}, text)
    with pytest.raises(ConfigError, match="divisible"):
        build({"name": "transformer", "dim": 30, "heads": 4}, text)
    with pytest.raises(ConfigError, match="depth"):
        build({"name": "resnet", "depth": 50}, SPECS["digits 8x8 grey"])
    with pytest.raises(ConfigError, match="needs option 'target'"):
        build("custom", text)
    no_vocab = DataSpec("novocab", "text", "classification", (8,), classes=["a", "b"])
    with pytest.raises(ConfigError, match="vocab_size"):
        build("lstm", no_vocab)


def test_custom_by_file_path(monkeypatch):
    net_file = Path(__file__).parent / "custom_nets.py"
    spec = SPECS["table regression"]
    model = build({"name": "custom", "target": f"{net_file}:NoSpecNet", "kwargs": {"inputs": 13, "outputs": 2}}, spec)
    assert model(torch.randn(3, 13)).shape == (3, 2)
    monkeypatch.chdir(net_file.parent)  # a relative path is relative to the working directory
    assert build({"name": "custom", "target": "custom_nets.py:AnyNet", "kwargs": {"hidden": 4}}, spec)


@pytest.mark.parametrize(
    ("target", "kwargs", "fragment"),
    [
        ("custom_nets", {}, "expected 'path/to/file.py:ClassName'"),
        ("missing_file.py:Net", {}, "file not found"),
        ("no_such_package.models:Net", {}, "cannot import module 'no_such_package.models'"),
        ("custom_nets:Missing", {}, "has no 'Missing' (nn.Module classes there: AnyNet, NoSpecNet)"),
        ("custom_nets:NoSpecNet", {"inputs": 13}, "rejected model.kwargs"),
        ("custom_nets:not_a_module", {}, "returned a str, not a torch.nn.Module"),
    ],
)
def test_custom_errors_say_what_to_fix(target, kwargs, fragment):
    with pytest.raises(ConfigError) as info:
        build({"name": "custom", "target": target, "kwargs": kwargs}, SPECS["table regression"])
    assert fragment in str(info.value)
