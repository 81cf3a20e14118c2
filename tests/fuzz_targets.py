"""The loaders of outside input that tests/test_fuzz.py attacks, one entry each in TARGETS.

A target is a hypothesis strategy of inputs and a function that feeds one input to the loader
and returns its result; it may also check what a success must look like. File loaders are made
with ``file_target``: valid seed files (mutated by truncation, byte edits and insertions, or
replaced by random bytes behind their signature) plus special cases such as huge declared sizes.

To cover a new loader (CSV, IDX, CIFAR, text, ...), add one ``file_target`` entry: a suffix,
the function that reads a path, and a few valid files in that format as seeds.
"""

from __future__ import annotations

import copy
import functools
import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
import yaml
from hypothesis import strategies as st
from make_data import digit_images, idx_bytes
from PIL import Image

from torchkeel.config import RunConfig, load_config, set_path, validate_config
from torchkeel.data.bundle import DataSpec
from torchkeel.models import build
from torchkeel.serve.predictor import load_image
from torchkeel.train import checkpoint as ckpt
from torchkeel.train.losses import build_loss, resolve_loss
from torchkeel.train.optim import build_optimizer, lr_factor
from torchkeel.weights import load_weights

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
MAX_PIXELS = 1_000_000  # the fuzzed predictor's limit: big enough for every seed, small enough to decode fast
GREY = DataSpec("fuzz", "image", "classification", (1, 8, 8), classes=[str(i) for i in range(10)])
COLOUR = DataSpec("fuzz", "image", "classification", (3, 16, 16), classes=["a", "b"])


@dataclass
class Target:
    cases: Callable[[], st.SearchStrategy]  # the inputs
    run: Callable[[Any, Path], Any]  # feed one to the loader (in a scratch folder); KeelError or a result
    check: Callable[[Any], None] = lambda result: None  # what a success must satisfy


# --------------------------------------------------------------------------------------------
# bytes: mutations of valid files


def _truncated(seed: bytes) -> st.SearchStrategy[bytes]:
    return st.integers(0, max(0, len(seed) - 1)).map(lambda n: seed[:n])


def _edited(seed: bytes) -> st.SearchStrategy[bytes]:
    def apply(edits: list[tuple[int, int]]) -> bytes:
        out = bytearray(seed)
        for at, value in edits:
            out[at % len(out)] = value
        return bytes(out)

    return st.lists(st.tuples(st.integers(0, 2**31), st.integers(0, 255)), min_size=1, max_size=8).map(apply)


def _inserted(seed: bytes) -> st.SearchStrategy[bytes]:
    return st.tuples(st.integers(0, len(seed)), st.binary(min_size=1, max_size=64)).map(
        lambda t: seed[: t[0]] + t[1] + seed[t[0] :]
    )


def hostile_bytes(seeds: list[bytes], extra: tuple[st.SearchStrategy[bytes], ...] = ()) -> st.SearchStrategy[bytes]:
    seed = st.sampled_from(seeds)
    signature = st.sampled_from(sorted({s[:8] for s in seeds}))
    return st.one_of(
        st.binary(max_size=2048),  # random bytes
        st.tuples(signature, st.binary(max_size=1024)).map(lambda t: t[0] + t[1]),  # random, behind a real signature
        seed,
        seed.flatmap(_truncated),
        seed.flatmap(_edited),
        seed.flatmap(_inserted),
        *extra,
    )


def file_target(
    suffix: str,
    load: Callable[[Path], Any],
    seeds: Callable[[], list[bytes]],
    extra: Callable[[], tuple[st.SearchStrategy[bytes], ...]] = tuple,
    check: Callable[[Any], None] = lambda result: None,
) -> Target:
    def run(data: bytes, folder: Path) -> Any:
        path = folder / f"input{suffix}"
        path.write_bytes(data)
        return load(path)

    return Target(lambda: hostile_bytes(seeds(), extra()), run, check)


# --------------------------------------------------------------------------------------------
# images, as `keel predict` and the server read them


def _encode(fmt: str, mode: str, size: tuple[int, int], **options: Any) -> bytes:
    g = torch.Generator().manual_seed(size[0] * 1000 + size[1])
    pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=g, dtype=torch.uint8).numpy()
    img = Image.fromarray(pixels)  # RGB
    img = img.convert("L").convert(mode) if mode == "I;16" else img.convert(mode)
    out = io.BytesIO()
    img.save(out, fmt, **options)
    return out.getvalue()


@functools.cache
def image_seeds(fmt: str) -> list[bytes]:
    modes = {"PNG": ["L", "RGB", "RGBA", "P", "I;16"], "JPEG": ["L", "RGB", "CMYK"], "BMP": ["L", "RGB", "P"]}
    modes["WEBP"] = ["RGB", "RGBA"]
    seeds = [_encode(fmt, m, (s, s + 3)) for m in modes[fmt] for s in (1, 9, 40)]
    if fmt == "JPEG":
        seeds.append(_encode(fmt, "RGB", (24, 24), progressive=True))
    if fmt == "PNG":
        seeds.append(_encode(fmt, "RGB", (24, 24), optimize=True))
    return seeds


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def huge_png(size: tuple[int, int, int]) -> bytes:
    """A well-formed PNG header declaring ``w x h`` pixels, with almost no pixel data."""
    w, h, colour = size
    ihdr = struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def huge_bmp(size: tuple[int, int]) -> bytes:
    w, h = size
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40 + 64, 0, 0, 14 + 40) + info + b"\x00" * 64


def huge_jpeg(size: tuple[int, int]) -> bytes:
    """A real JPEG whose frame header (SOF0) is rewritten to declare ``w x h``."""
    seed = bytearray(_encode("JPEG", "RGB", (16, 16)))
    sof = seed.index(b"\xff\xc0")
    seed[sof + 5 : sof + 9] = struct.pack(">HH", size[1], size[0])
    return bytes(seed)


def huge_webp(size: tuple[int, int]) -> bytes:
    """An extended-format WEBP header (VP8X) declaring a ``w x h`` canvas, up to 2^24 a side."""
    w, h = size
    vp8x = (
        b"VP8X"
        + struct.pack("<I", 10)
        + b"\x00\x00\x00\x00"
        + (w - 1).to_bytes(3, "little")
        + (h - 1).to_bytes(3, "little")
    )
    body = b"WEBP" + vp8x + b"VP8 " + struct.pack("<I", 8) + b"\x00" * 8
    return b"RIFF" + struct.pack("<I", len(body)) + body


HUGE_IMAGES = {
    "PNG": lambda: st.tuples(st.integers(1, 2**31 - 1), st.integers(1, 2**31 - 1), st.sampled_from([0, 2, 6])).map(
        huge_png
    ),
    "BMP": lambda: st.tuples(st.integers(-(2**31), 2**31 - 1), st.integers(-(2**31), 2**31 - 1)).map(huge_bmp),
    "JPEG": lambda: st.tuples(st.integers(0, 65535), st.integers(0, 65535)).map(huge_jpeg),
    "WEBP": lambda: st.tuples(st.integers(1, 2**24), st.integers(1, 2**24)).map(huge_webp),
}


def image_target(fmt: str, spec: DataSpec) -> Target:
    def check(result: tuple[torch.Tensor, str]) -> None:
        x, _ = result
        assert x.shape == spec.input_shape and x.dtype == torch.float32
        assert torch.isfinite(x).all() and x.min() >= 0 and x.max() <= 1

    return file_target(
        f".{fmt.lower()}",
        lambda path: load_image(path, spec, max_pixels=MAX_PIXELS),
        lambda: image_seeds(fmt),
        lambda: (HUGE_IMAGES[fmt](),),
        check,
    )


# --------------------------------------------------------------------------------------------
# configs: YAML files, values at every key, --set overrides


def usable(cfg: RunConfig) -> None:
    """A config that validated must also build: model (on the meta device, so that a huge one
    allocates nothing), optimiser, loss, schedule; and round-trip through its YAML."""
    with torch.device("meta"):
        model = build(cfg.model, GREY)
    build_optimizer(model, cfg.train.optimizer)
    build_loss(resolve_loss(cfg.train.loss, GREY), cfg.train.label_smoothing)
    total = cfg.train.epochs * 10
    for step in (0, total // 2, total - 1):
        lr_factor(cfg.train.schedule, step, total, 10)
    assert validate_config(yaml.safe_load(cfg.to_yaml())) == cfg


def _leaf_paths(node: dict[str, Any], prefix: str = "") -> list[str]:
    paths = []
    for key, value in node.items():
        path = f"{prefix}{key}"
        paths.append(path)
        if isinstance(value, dict):
            paths += _leaf_paths(value, f"{path}.")
    return paths


DEFAULTS = RunConfig().to_dict()
KEY_PATHS = [*_leaf_paths(DEFAULTS), "train.early_stopping.monitor", "train.optimzer", "model.hiden", "x", ""]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, 1, -1, 2**31, 2**63, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["digits", "mlp", "simple_cnn", "relu", "sgd", "val/loss", "cuda", "cpu", "auto", "skip"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def _with_values(edits: list[tuple[str, Any]]) -> dict[str, Any]:
    raw = copy.deepcopy(DEFAULTS)
    for path, value in edits:
        set_path(raw, path, value)
    return raw


def config_values_target() -> Target:
    return Target(
        lambda: st.lists(st.tuples(st.sampled_from(KEY_PATHS), VALUES), min_size=1, max_size=5).map(_with_values),
        lambda raw, folder: usable(validate_config(raw)),
    )


def _override(pair: tuple[str, str]) -> str:
    return f"{pair[0]}={pair[1]}"


def overrides_target() -> Target:
    key = st.sampled_from(KEY_PATHS) | st.text(max_size=20)
    value = VALUES.map(lambda v: yaml.safe_dump(v, default_flow_style=True).strip()) | st.text(max_size=40)
    overrides = st.lists(st.tuples(key, value).map(_override) | st.text(max_size=30), min_size=1, max_size=4)
    return Target(lambda: overrides, lambda items, folder: usable(load_config(None, items)))


def yaml_seeds() -> list[bytes]:
    return [p.read_bytes() for p in sorted(CONFIGS.glob("*.yaml"))] + [RunConfig().to_yaml().encode()]


def _laughs(levels: int = 9) -> bytes:
    """The "billion laughs": each line repeats the previous alias 9 times, 9^levels values."""
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines).encode() + b"\n"


# hostile configs and the error each must give
YAML_BOMBS = {
    "billion-laughs": (_laughs(), "after expanding YAML aliases"),
    "self-alias": (b"model: &m {name: mlp, hidden: *m}\n", "refers to itself"),
    "deep-nesting": (b"train: " + b"[" * 50_000 + b"]" * 50_000, "nested too deeply"),
    "oversized": (b"train: {epochs: 1}\n" + b"#" * 1_100_000, "too large for a config"),
    "not-utf8": ("name: caf\u00e9\n".encode("latin-1"), "not a UTF-8 text file"),
    "python-tag": (b"!!python/object/apply:os.system [echo pwned]\n", "not valid YAML"),
}


def yaml_target() -> Target:
    documents = VALUES.map(lambda v: yaml.safe_dump({"train": v, "model": v} if v is not None else v).encode())
    bombs = st.sampled_from([text for text, _ in YAML_BOMBS.values()])
    return file_target(".yaml", lambda path: usable(load_config(path)), yaml_seeds, lambda: (bombs, documents))


# --------------------------------------------------------------------------------------------
# checkpoints and imported weights


def _tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))


@functools.cache
def checkpoint_seeds() -> list[bytes]:
    model = _tiny_model()
    opt = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 4)).sum().backward()
    opt.step()
    seeds = []
    for extra in ({}, {"best.w": torch.ones(3)}):
        tensors, metadata = ckpt.snapshot(model, opt, {"epoch": 1, "batch": 3, "global_step": 7}, extra)
        checksums = {k: ckpt.tensor_digest(v) for k, v in tensors.items()}
        checksums[ckpt.METADATA_KEY] = ckpt._metadata_digest(metadata)
        seeds.append(safetensors.torch.save(tensors, metadata={**metadata, "checksums": _json(checksums)}))
    return seeds


def _json(value: Any) -> str:
    import json

    return json.dumps(value)


def _restore(path: Path) -> Any:
    model = _tiny_model()
    return ckpt.restore(ckpt.read_checkpoint(path), model, torch.optim.AdamW(model.parameters()), restore_rng=False)


@functools.cache
def weights_seeds() -> list[bytes]:
    state = _tiny_model().state_dict()
    seeds = []
    for obj in (state, {"epoch": 2, "state_dict": {f"module.{k}": v for k, v in state.items()}}):
        out = io.BytesIO()
        torch.save(obj, out)
        seeds.append(out.getvalue())
    seeds.append(safetensors.torch.save({k: v.contiguous() for k, v in state.items()}))
    return seeds


# --------------------------------------------------------------------------------------------
# IDX files of the MNIST family, read by torchkeel.data.idx inside the `mnist` loader


IDX_IMAGES = 30  # images in the seed files


@functools.cache
def idx_seeds() -> list[bytes]:
    images, labels = digit_images(IDX_IMAGES)
    return [idx_bytes(images), idx_bytes(labels)]


def huge_idx() -> st.SearchStrategy[bytes]:
    """Headers declaring up to 2^32-1 images of up to 2^32-1 pixels over a few bytes of values."""
    dims = st.tuples(*(st.integers(0, 2**32 - 1) for _ in range(3)))
    return st.tuples(dims, st.binary(max_size=64)).map(lambda t: struct.pack(">BBBB3I", 0, 0, 8, 3, *t[0]) + t[1])


def _load_mnist_with(path: Path) -> Any:
    """The `mnist` loader over a folder whose training images file holds ``path``'s bytes."""
    from torchkeel.config import DataConfig
    from torchkeel.data import load

    raw = path.parent / "root" / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    images, labels = idx_seeds()
    files = {"train-images": path.read_bytes(), "train-labels": labels, "t10k-images": images, "t10k-labels": labels}
    for name, content in files.items():
        (raw / f"{name}-idx{3 if 'images' in name else 1}-ubyte").write_bytes(content)
    return load(DataConfig(name="mnist", root=str(path.parent / "root")), seed=0)


def _check_mnist(data: Any) -> None:
    assert sum(len(part) for part in (data.train, data.val) if part is not None) == IDX_IMAGES
    assert data.spec.input_shape[0] == 1
    assert torch.isfinite(data.train.x).all()


TARGETS: dict[str, Target] = {
    "png": image_target("PNG", GREY),
    "jpeg": image_target("JPEG", COLOUR),
    "bmp": image_target("BMP", GREY),
    "webp": image_target("WEBP", COLOUR),
    "config-yaml": yaml_target(),
    "config-values": config_values_target(),
    "config-overrides": overrides_target(),
    "checkpoint": file_target(".safetensors", _restore, checkpoint_seeds),
    "weights-import": file_target(".pt", lambda path: load_weights(_tiny_model(), path), weights_seeds),
    "mnist-idx": file_target("-idx3-ubyte", _load_mnist_with, idx_seeds, lambda: (huge_idx(),), _check_mnist),
}
