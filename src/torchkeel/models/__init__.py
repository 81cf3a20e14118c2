"""Models by name: ``build(cfg, spec)`` returns an ``nn.Module`` sized from the DataSpec.

Every builder takes the DataSpec and keyword-only options; the options a config may give are
exactly the builder's keyword arguments, checked (names and types) when the config is loaded.
``ACCEPTS`` says which kinds of data (``DataSpec.kind``) each model takes; ``describe`` gives
the one-line description ``keel models`` prints (the builder's docstring, first line).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from pydantic import ConfigDict, ValidationError, create_model
from torch import nn

from torchkeel.data.bundle import DataSpec
from torchkeel.data.kinds import KINDS as DATA_KINDS
from torchkeel.errors import ConfigError, RunError, check_choice, unknown_choice
from torchkeel.models import detect
from torchkeel.models.airbench import airbench
from torchkeel.models.audio import ctc_gru, logmel_cnn, m5
from torchkeel.models.cnn import simple_cnn
from torchkeel.models.custom import build_custom, custom, trusted_factory
from torchkeel.models.detect import fasterrcnn_mobilenet_v3, fcos, retinanet, ssdlite
from torchkeel.models.efficientnet import efficientnet_lite0
from torchkeel.models.ensemble import Ensemble
from torchkeel.models.gan import dcgan
from torchkeel.models.gpt import gpt
from torchkeel.models.layers import ACTIVATIONS
from torchkeel.models.lenet import lenet5
from torchkeel.models.mlp import mlp
from torchkeel.models.pretrained import pretrained_text
from torchkeel.models.pretrained_lm import pretrained_lm
from torchkeel.models.resnet import resnet
from torchkeel.models.rnn import gru, lstm, rnn
from torchkeel.models.segment import deeplabv3_mobilenet_v3, lraspp_mobilenet_v3, unet
from torchkeel.models.seq2seq import transformer_seq2seq
from torchkeel.models.seq2seq_rnn import gru_seq2seq
from torchkeel.models.text import embedding_bag, linear_bow
from torchkeel.models.transformer import transformer, vit
from torchkeel.models.vision import resnet18, resnet34, resnet50
from torchkeel.tasks import task_of

MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": mlp,
    "simple_cnn": simple_cnn,
    "lenet5": lenet5,
    "resnet": resnet,
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "efficientnet_lite0": efficientnet_lite0,
    "rnn": rnn,
    "lstm": lstm,
    "gru": gru,
    "transformer": transformer,
    "gpt": gpt,
    "vit": vit,
    "dcgan": dcgan,
    "custom": custom,
    "embedding_bag": embedding_bag,
    "linear_bow": linear_bow,
    "pretrained_text": pretrained_text,
    "pretrained_lm": pretrained_lm,
    "airbench": airbench,
    "logmel_cnn": logmel_cnn,
    "m5": m5,
    "ctc_gru": ctc_gru,
    "transformer_seq2seq": transformer_seq2seq,
    "gru_seq2seq": gru_seq2seq,
    "unet": unet,
    "lraspp_mobilenet_v3": lraspp_mobilenet_v3,
    "deeplabv3_mobilenet_v3": deeplabv3_mobilenet_v3,
    "fcos": fcos,
    "retinanet": retinanet,
    "fasterrcnn_mobilenet_v3": fasterrcnn_mobilenet_v3,
    "ssdlite": ssdlite,
}

KINDS = tuple(DATA_KINDS)  # every kind of data (data/kinds.py)

# the kinds of data each model takes (DataSpec.kind); build() refuses the others
ACCEPTS: dict[str, tuple[str, ...]] = {
    "mlp": ("image", "table", "series"),
    "simple_cnn": ("image",),
    "lenet5": ("image",),
    "resnet": ("image",),
    "resnet18": ("image",),
    "resnet34": ("image",),
    "resnet50": ("image",),
    "efficientnet_lite0": ("image",),
    "rnn": ("text", "series"),
    "lstm": ("text", "series"),
    "gru": ("text", "series"),
    "transformer": ("text",),
    "gpt": ("text",),  # a corpus (language modelling); other text is refused
    "vit": ("image",),
    "dcgan": ("image",),
    "embedding_bag": ("text",),
    "linear_bow": ("text",),
    "pretrained_text": ("text",),
    "pretrained_lm": ("text",),  # a corpus tokenised by the model's own tokeniser
    "airbench": ("image",),
    "logmel_cnn": ("audio",),
    "m5": ("audio",),
    "ctc_gru": ("audio",),  # speech recognition: a transcript per clip
    "transformer_seq2seq": ("text",),  # parallel text (text_pairs): translation
    "gru_seq2seq": ("text",),
    "unet": ("image",),  # a mask per image (mask_folder): segmentation
    "lraspp_mobilenet_v3": ("image",),
    "deeplabv3_mobilenet_v3": ("image",),
    "fcos": ("image",),  # boxes per image (box_folder): object detection
    "retinanet": ("image",),
    "fasterrcnn_mobilenet_v3": ("image",),
    "ssdlite": ("image",),
    "custom": KINDS,  # whatever the user's module takes
    "ensemble": KINDS,  # its members' kinds (keel train --auto's ensemble of its candidates)
}

# the task a model does when it is not the data's own: a GAN generates images from a labelled
# set (and trains by its own loop, train/gan.py)
MODEL_TASKS: dict[str, str] = {"dcgan": "generate"}


IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])  # torchvision's weights were trained so
LITE = ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])  # EfficientNet-Lite's TensorFlow checkpoints: [-1, 1]

# the input statistics a model's pretrained weights expect, by model and the option that loads them
PRETRAINED_INPUTS: dict[str, tuple[str, tuple[list[float], list[float]]]] = {
    "resnet18": ("pretrained", IMAGENET),
    "resnet34": ("pretrained", IMAGENET),
    "resnet50": ("pretrained", IMAGENET),
    "efficientnet_lite0": ("pretrained", LITE),
    "unet": ("pretrained", LITE),  # only its efficientnet_lite0 encoder loads weights
    "lraspp_mobilenet_v3": ("pretrained", IMAGENET),
    "deeplabv3_mobilenet_v3": ("pretrained", IMAGENET),
    "fcos": ("pretrained", LITE),  # the detectors' pretrained backbone is EfficientNet-Lite0
    "retinanet": ("pretrained", LITE),
    "fasterrcnn_mobilenet_v3": ("pretrained", LITE),
}

# models whose output is a map with a prediction per pixel, or boxes; the others predict per sample
DENSE = frozenset({"unet", "lraspp_mobilenet_v3", "deeplabv3_mobilenet_v3"})
DETECTORS = frozenset(detect.DETECTORS)
WANTS = {"pixel": "a class for every pixel", "boxes": "boxes around objects", "sample": "one output per sample"}


def output_form(name: str) -> str:
    """What model ``name`` outputs: "pixel" maps, "boxes", or one per "sample" (a Task's output_form)."""
    return "pixel" if name in DENSE else "boxes" if name in DETECTORS else "sample"


def pretrained_inputs(model_cfg: Any) -> tuple[list[float], list[float]] | None:
    """The (mean, std) a model's pretrained weights were trained with, when the config loads
    them; None when the data's own train-split statistics serve (a model trained from scratch)."""
    name = model_cfg.name if hasattr(model_cfg, "name") else model_cfg.get("name", "")
    options = model_cfg.options() if hasattr(model_cfg, "options") else model_cfg
    if name not in PRETRAINED_INPUTS:
        return None
    option, stats = PRETRAINED_INPUTS[name]
    return stats if options.get(option) else None


def task_name(model_name: str, data_task: str) -> str:
    """The task of a run: the model's own (MODEL_TASKS), else the data's."""
    return MODEL_TASKS.get(model_name, data_task)


def build(cfg: Any, spec: DataSpec) -> nn.Module:
    """Build by ``ModelConfig``, by a name (``build("mlp", spec)``) or by a dict with ``name``."""
    if isinstance(cfg, str):
        name, options = cfg, {}
    elif isinstance(cfg, dict):
        name, options = cfg.get("name", ""), {k: v for k, v in cfg.items() if k != "name"}
    else:
        name, options = cfg.name, cfg.options()
    check_choice("model", name, MODELS)
    check_kind(name, spec)
    return MODELS[name](spec, **check_options(name, options))


# options a built-in model gained after runs had been saved without them, with the value those
# runs were trained with: model.json stores every option, so a run saved before one rebuilds as
# it was trained (with today's default, its weights would not fit)
ADDED_OPTIONS: dict[str, dict[str, Any]] = {
    "logmel_cnn": {"warp": 0.0, "band_means": False},
    "ctc_gru": {"warp": 0.0, "band_means": False},
}


def saved_options(model_cfg: Any) -> Any:
    """A run's stored model config (model.json) with the options it predates filled in."""
    if not isinstance(model_cfg, dict) or not isinstance(model_cfg.get("name"), str):
        return model_cfg
    return {**ADDED_OPTIONS.get(model_cfg["name"], {}), **model_cfg}


def rebuild(model_cfg: dict[str, Any], spec: DataSpec, code: Any = None, run_name: str = "this run") -> nn.Module:
    """Rebuild a saved run's model from its stored config (model.json or config.yaml) without
    importing or calling anything that config names: built-in models come from the registry
    with their options validated as at train time; a custom model only from ``code`` the
    user names now (a target string or the class), which must match the stored target."""
    if not isinstance(model_cfg, dict) or not isinstance(model_cfg.get("name"), str):
        raise ConfigError("the stored model config has no model name")
    name = model_cfg["name"]
    options = {k: v for k, v in model_cfg.items() if k not in ("name", "init_from")}
    check_choice("model", name, MODELS)
    check_kind(name, spec)
    options = check_options(name, options)
    if "pretrained" in options:  # the run's own weights replace them: nothing to read or download
        options["pretrained"] = False
    if name != "custom":
        if code is not None:
            raise RunError(f"--model-code is for runs of your own models; {run_name} is the built-in '{name}'")
        return MODELS[name](spec, **options)
    factory = trusted_factory(options["target"], code, run_name)
    return build_custom(spec, factory, options["target"], options["kwargs"])


def ensemble(
    spec: DataSpec,
    *,
    members: list[dict[str, Any]] = [],  # noqa: B006  (a config default, never mutated)
    weights: list[float] = [],  # noqa: B006
) -> nn.Module:
    """The weighted mean of trained models' class probabilities (built by keel train --auto).

    ``members``: each member's model config (``name`` and options, as in its model.json);
    ``weights``: one per member, positive. The members' own DataSpecs are in the spec; each
    member is rebuilt as a run's model is (its weights come from the ensemble's file).
    """
    specs = spec.extra.get("members")
    if not members or not isinstance(specs, list) or len(specs) != len(members):
        raise ConfigError(
            "model 'ensemble' is built by `keel train --auto` from trained runs (its data spec names "
            "each member's); train the members and let --auto combine them"
        )
    if len(weights) != len(members) or not all(0 < w < float("inf") for w in weights):
        raise ConfigError(f"model 'ensemble': {len(members)} members need as many positive weights (got {weights})")
    member_specs = [DataSpec.from_dict(s) for s in specs]
    widths = spec.member_widths
    if widths is not None and (
        len(widths) != len(members)
        or min(widths) < 1
        or sum(widths) != spec.input_shape[0]
        or [s.input_shape[0] for s in member_specs] != widths
    ):
        raise ConfigError(f"model 'ensemble': the members' widths {widths} do not make up its rows {spec.input_shape}")
    if any((s.task, s.classes) != (spec.task, spec.classes) for s in member_specs):
        raise ConfigError("model 'ensemble': every member must predict the ensemble's classes")
    pairs = zip(members, member_specs, strict=True)
    built = [rebuild(saved_options(dict(m)), s, run_name="an ensemble") for m, s in pairs]
    return Ensemble(built, list(weights), widths, spec)


MODELS["ensemble"] = ensemble


def check_kind(name: str, spec: DataSpec) -> None:
    """A model given data it cannot take fails here, naming the models that can."""
    form = task_of(spec).output_form
    if spec.kind in ACCEPTS[name] and (name == "custom" or output_form(name) == form):
        return
    fits = [m for m, kinds in ACCEPTS.items() if spec.kind in kinds and m != "custom" and output_form(m) == form]
    if spec.kind in ACCEPTS[name]:
        what = WANTS[form]
        raise ConfigError(
            f"model '{name}' does not fit data '{spec.name}', which wants {what} ({task_of(spec).description}): "
            f"use model {', '.join(repr(m) for m in fits)}"
        )
    raise ConfigError(
        f"model '{name}' takes {' or '.join(ACCEPTS[name])} data; data '{spec.name}' is {spec.kind} "
        f"(shape {tuple(spec.input_shape)}): use model {', '.join(repr(m) for m in fits)}"
    )


def check_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Validate a model's options against its builder's signature; return every option of
    the builder (defaults filled in), coerced to the annotated types."""
    schema = _options_schema(name)
    for key in options:
        if key not in schema.model_fields:
            raise ConfigError(f"model '{name}': " + unknown_choice("option", key, schema.model_fields))
    if "activation" in options:
        check_choice("activation", options["activation"], ACTIVATIONS)
    try:
        parsed = schema.model_validate(options)
    except ValidationError as e:
        first = e.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        if first["type"] == "missing":
            raise ConfigError(f"model '{name}' needs option '{key}' (model.{key})") from None
        raise ConfigError(f"model '{name}' option '{key}': {first['msg']} (got {first.get('input')!r})") from None
    return {k: getattr(parsed, k) for k in schema.model_fields}


@functools.cache
def _options_schema(name: str) -> type:
    fields = {
        p.name: (p.annotation, ... if p.default is inspect.Parameter.empty else p.default)
        for p in inspect.signature(MODELS[name], eval_str=True).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }
    return create_model(f"{name}_options", __config__=ConfigDict(extra="forbid"), **fields)


def describe(name: str) -> str:
    """The builder's one-line description."""
    doc = inspect.getdoc(MODELS[name]) or ""
    return doc.split("\n\n")[0].replace("\n", " ").replace("``", "")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = [
    "ACCEPTS",
    "MODEL_TASKS",
    "KINDS",
    "MODELS",
    "build",
    "check_kind",
    "check_options",
    "count_parameters",
    "pretrained_inputs",
    "rebuild",
    "task_name",
]
