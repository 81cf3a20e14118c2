"""What ``keel data`` shows: split sizes, classes with counts, input shape or vocabulary,
normalisation statistics; for images a PNG grid of training samples with their labels."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch

from torchkeel.data.bundle import DataBundle
from torchkeel.data.kinds import kind_of
from torchkeel.tasks import task_of

GRID_SAMPLES = 64


def describe(bundle: DataBundle) -> dict[str, Any]:
    """A JSON-able summary of a loaded data set."""
    spec = bundle.spec
    splits = bundle.splits()
    info: dict[str, Any] = {
        "name": spec.name,
        "kind": spec.kind,
        "task": spec.task,
        "sizes": {k: len(v) for k, v in splits.items()},
        "input_shape": list(spec.input_shape),
    }
    if spec.classes:
        counts = {
            k: torch.bincount(v.y.long().cpu().view(-1), minlength=spec.num_classes).tolist() for k, v in splits.items()
        }
        info["classes"] = [{"class": c, **{k: counts[k][i] for k in splits}} for i, c in enumerate(spec.classes)]
    elif "corpus" not in spec.extra:  # a corpus's targets are its next tokens
        scale = spec.extra.get("target_scale") or {"mean": 0.0, "std": 1.0}
        y = bundle.train.y.double() * scale["std"] + scale["mean"]
        info["target"] = {"mean": y.mean().item(), "std": y.std().item(), "min": y.min().item(), "max": y.max().item()}
    if "class_weights" in spec.extra:
        info["class_weights"] = spec.extra["class_weights"]
    info |= _kind_details(bundle)
    return info


def _kind_details(bundle: DataBundle) -> dict[str, Any]:
    spec, kind = bundle.spec, kind_of(bundle.spec)
    if kind.pixels:
        return {"normalisation": {"mean": spec.mean, "std": spec.std, "from": "train split, per channel"}}
    if kind.features:
        encoder = spec.extra["table"]["encoder"]
        return {
            "features": len(spec.extra["table"]["features"]),
            "numeric": [{k: c[k] for k in ("name", "mean", "std", "fill")} for c in encoder["numeric"]],
            "categorical": [{"name": c["name"], "categories": len(c["categories"])} for c in encoder["categorical"]],
            "encoding": encoder["encoding"],
        }
    if kind.token_ids and "corpus" in spec.extra:
        return corpus_details(spec)
    if kind.token_ids:
        lengths = (bundle.train.x != spec.extra["pad_index"]).sum(1).double()
        unknown = (bundle.train.x == spec.extra["unk_index"]).sum().item() / max(lengths.sum().item(), 1)
        return {
            "vocab_size": spec.extra["vocab_size"],
            "tokenizer": tokenizer_name(spec.extra["tokenizer"]),
            "length": spec.input_shape[0],
            "mean_tokens": lengths.mean().item(),
            "truncated": spec.extra.get("truncated", 0),
            "unknown_token_rate": unknown,
        }
    return {}


def corpus_details(spec: Any) -> dict[str, Any]:
    """A language-model corpus: its tokens, the tokeniser and what is held out."""
    from torchkeel.data.lm_tokenizer import tokenizer_from_spec

    corpus, tokenizer = spec.extra["corpus"], tokenizer_from_spec(spec)
    sample = [tokenizer.decode([i]) for i in range(min(tokenizer.vocab_size, 80))]
    return {
        "corpus": corpus,
        "vocab_size": spec.extra["vocab_size"],
        "tokenizer": spec.extra["tokenizer"]["type"],
        "tokenizer_source": spec.extra["tokenizer"].get("source"),  # a pretrained model's
        "vocab_sample": sample,
        "block_size": spec.extra["block_size"],
        "chars_per_token": spec.extra["chars_per_token"],
    }


def _corpus_tokenizer(info: dict[str, Any]) -> str:
    if info.get("tokenizer_source"):
        return f"the tokeniser of the pretrained model '{info['tokenizer_source']}'"
    return f"{info['tokenizer']} tokeniser from the training part"


def write_sample_grid(bundle: DataBundle, path: str | Path, seed: int = 0, count: int = GRID_SAMPLES) -> Path:
    """A PNG of up to ``count`` random train images (un-normalised) titled with their labels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from torchkeel import atomic

    spec, train = bundle.spec, bundle.train
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(train), generator=g)[: min(count, len(train))]
    mean = torch.tensor(spec.mean).view(1, -1, 1, 1)
    std = torch.tensor(spec.std).view(1, -1, 1, 1)
    images = (train.x[pick].cpu().float() * std + mean).clamp(0, 1)  # (n, C, H, W) in [0, 1]
    labels = train.y.cpu()[pick].tolist()
    side = max(1, int(len(pick) ** 0.5 + 0.999))
    fig = Figure(figsize=(side * 1.2, side * 1.3))
    FigureCanvasAgg(fig)
    dense = task_of(spec).dense  # a mask per image (segmentation): drawn over it, titled by its index
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        ax = fig.add_subplot(side, side, i + 1)
        if dense:
            from torchkeel.serve.pictures import overlay

            ax.imshow(overlay(image, np.asarray(label, dtype=np.uint8), spec))
            ax.set_title(f"#{int(pick[i])}", fontsize=7)
            ax.axis("off")
            continue
        picture = image.permute(1, 2, 0).numpy()
        ax.imshow(picture[..., 0] if picture.shape[2] == 1 else picture, cmap="gray", vmin=0, vmax=1)
        ax.set_title(spec.classes[label] if spec.classes else str(label), fontsize=7)
        ax.axis("off")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    path = Path(path)
    atomic.write_bytes(path, buffer.getvalue())
    return path


def render(info: dict[str, Any]) -> list[Any]:
    """rich renderables for the terminal."""
    from rich.table import Table

    shape = "x".join(map(str, info["input_shape"]))
    sizes = " / ".join(f"{n:,} {k}" for k, n in info["sizes"].items())
    lines: list[Any] = [f"[bold]{info['name']}[/]: {info['kind']} {info['task']}; {sizes}; input {shape}"]
    if "classes" in info:
        table = Table(title="classes", title_justify="left")
        for col in ("class", *info["sizes"]):
            table.add_column(col, justify="left" if col == "class" else "right")
        for row in info["classes"]:
            table.add_row(str(row["class"]), *(f"{row[k]:,}" for k in info["sizes"]))
        lines.append(table)
    if "target" in info:
        t = info["target"]
        lines.append(
            f"target (train): mean {t['mean']:.4g}, std {t['std']:.4g}, min {t['min']:.4g}, max {t['max']:.4g}"
        )
    if "class_weights" in info:
        lines.append("class weights: " + ", ".join(f"{w:.3f}" for w in info["class_weights"]))
    if "normalisation" in info:
        n = info["normalisation"]
        lines.append(f"normalisation ({n['from']}): mean {_fmt(n['mean'])}, std {_fmt(n['std'])}")
    if "features" in info:
        lines.append(
            f"{info['features']} features: {len(info['numeric'])} numeric columns standardised (train mean/std, "
            f"missing -> train fill), {len(info['categorical'])} categorical ({info['encoding']})"
        )
        lines += [
            f"  {c['name']}: mean {c['mean']:.4g}, std {c['std']:.4g}, fill {c['fill']:.4g}" for c in info["numeric"]
        ]
        lines += [f"  {c['name']}: {c['categories']} categories" for c in info["categorical"]]
    if "corpus" in info:
        lines += corpus_lines(info)
    elif "vocab_size" in info:
        lines.append(
            f"vocabulary {info['vocab_size']:,} ({info['tokenizer']} tokeniser from the train split); "
            f"length {info['length']} tokens, {info['mean_tokens']:.1f} on average, {info['truncated']:,} texts "
            f"truncated; {info['unknown_token_rate']:.2%} of train tokens are <unk>"
        )
    return lines


def corpus_lines(info: dict[str, Any]) -> list[str]:
    c = info["corpus"]
    lines = [
        f"corpus: {c['files']:,} file(s); {c['train_tokens']:,} training tokens, {c['val_tokens']:,} held out "
        f"({c['held_out']}); windows of {info['block_size']} tokens, {c['eval_windows']:,} held-out windows evaluated",
        f"vocabulary {info['vocab_size']:,} ({_corpus_tokenizer(info)}; "
        f"{info['chars_per_token']:.2f} characters per token): {' '.join(repr(t) for t in info['vocab_sample'][:40])}",
        f"encoded token files: {c['cache']}",
    ]
    if c["val_unknown_chars"]:
        shown = " ".join(repr(ch) for ch in c["val_unknown_chars"][:20])
        lines.append(f"held-out characters outside the vocabulary (left out when encoding): {shown}")
    return lines


def _fmt(values: list[float] | None) -> str:
    return "[" + ", ".join(f"{v:.4f}" for v in values or []) + "]"


def tokenizer_name(stored: dict[str, Any]) -> str:
    """ "word", "bpe", ...; "word + hashed 2-grams" for an n-gram tokeniser over a word one."""
    if stored["type"] == "ngram":
        return f"{tokenizer_name(stored['base'])} + hashed {stored['n']}-grams"
    return stored["type"]
