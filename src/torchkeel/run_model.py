"""A trained run's model and data, from its folder alone: what eval, predict, report, export
and serve load, and what ``keel train`` writes when it finishes.

model.safetensors holds the weights and model.json the architecture (name and options), the
DataSpec and the loss: enough to rebuild the model without the data set. Loading never
imports or calls anything the folder names (models.rebuild).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from rich.table import Table
from torch import nn

from torchkeel import __version__, atomic
from torchkeel.config import RunConfig, validate_config
from torchkeel.data import DataBundle, load
from torchkeel.data.bundle import DataSpec
from torchkeel.data.corpus import with_cache
from torchkeel.data.images import renormalise
from torchkeel.data.kinds import kind_of
from torchkeel.errors import KeelError, RunError
from torchkeel.models import pretrained_inputs, rebuild, saved_options, task_name
from torchkeel.tasks import Task, task_of
from torchkeel.train import checkpoint as ckpt
from torchkeel.train import runtime
from torchkeel.train.losses import resolve_loss


def prepare_data(cfg: RunConfig, fitted: DataSpec | None = None) -> DataBundle:
    """Load the data set; with ``loss: bce`` a two-class problem becomes one sigmoid logit.
    ``fitted``: a trained run's DataSpec, whose tokeniser a rebuilt text set reuses. A text
    corpus is encoded into ``<out_dir>/.corpus`` unless ``data.corpus.cache`` says where."""
    data = load(with_cache(cfg.data, cfg.out_dir), cfg.seed, fitted)
    data.spec.task = task_name(cfg.model.name, data.spec.task)  # a GAN generates from a labelled set
    stats = pretrained_inputs(cfg.model)  # pretrained weights see inputs as they were trained on
    if stats is not None and data.spec.mean is not None and kind_of(data.spec).pixels:
        data = renormalise(data, *stats, f"{cfg.model.name}'s pretraining")
    data = task_of(data.spec).prepare(data, cfg.train.loss)  # e.g. bce on two classes: one logit
    resolve_loss(cfg.train.loss, data.spec)  # a loss that cannot fit the task fails here
    return data


def save_model(run_dir: Path, model: nn.Module, cfg: RunConfig, spec: DataSpec, loss: str | None = None) -> None:
    """model.safetensors (weights) and model.json (enough to rebuild it without the data);
    ``loss`` overrides the supervised loss recorded (a GAN's is "adversarial")."""
    weights = ckpt.saveable(model.state_dict())
    atomic.write_bytes(run_dir / "model.safetensors", safetensors.torch.save(weights))
    meta = {
        "format": "torchkeel-model-1",
        "torchkeel": __version__,
        # init_from only seeded training; this file's weights replace it
        "model": cfg.model.model_dump(mode="json", exclude={"init_from"}),
        "spec": spec.to_dict(),
        "loss": loss or resolve_loss(cfg.train.loss, spec),
    }
    atomic.write_json(run_dir / "model.json", meta)


def load_model(
    run_dir: Path, device: str | torch.device = "cpu", model_code: Any = None
) -> tuple[nn.Module, DataSpec, dict[str, Any]]:
    """Rebuild a trained model from model.json and model.safetensors alone. Nothing model.json
    names is imported: a custom model needs ``model_code`` (see models.rebuild)."""
    meta_file, weights_file = run_dir / "model.json", run_dir / "model.safetensors"
    if not meta_file.is_file() or not weights_file.is_file():
        raise RunError(
            f"{run_dir.name} has no trained model: the run did not finish "
            f"(continue it with `keel train --resume {run_dir}`)"
        )
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        spec = DataSpec.from_dict(meta["spec"])
        spec.task = task_name(meta["model"]["name"], spec.task)  # GAN runs saved before tasks had their own
        meta["model"] = saved_options(meta["model"])  # options a model gained after the run was saved
        _check_weights_fit(meta["model"], spec, weights_file, model_code)
        model = rebuild(meta["model"], spec, model_code, run_dir.name)
        model.load_state_dict(safetensors.torch.load_file(str(weights_file), device=str(device)))
    except RunError:
        raise
    except KeelError as e:  # e.g. an unknown model name or option: the run's file, not the user's config
        raise RunError(f"{run_dir.name}: model.json is damaged or edited: {e}") from None
    except Exception as e:  # a damaged or edited file: JSON, key, type, shape and safetensors errors
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise RunError(
            f"{run_dir.name}: model.json or model.safetensors is damaged ({type(e).__name__}: {first})"
        ) from None
    return model.to(device).eval(), spec, meta


def _check_weights_fit(model_cfg: dict[str, Any], spec: DataSpec, weights_file: Path, model_code: Any) -> None:
    """Compare the model's tensor shapes, built on the meta device (no memory), with those in
    the weights file's header before building it for real: an edited model.json cannot make
    loading allocate more than the weights file holds."""
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "initializing zero-element tensors": nothing is allocated here
        skeleton = rebuild(model_cfg, spec, model_code, weights_file.parent.name)
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    with safetensors.safe_open(str(weights_file), framework="pt") as f:
        stored = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    if stored != expected:
        differ = sorted(k for k in expected.keys() | stored.keys() if expected.get(k) != stored.get(k))
        raise RunError(
            f"{weights_file.parent.name}: model.json and model.safetensors disagree on {', '.join(differ[:3])}"
        )


def run_task(spec: DataSpec, use: str, run_dir: Path) -> Task:
    """The task of a loaded run, after checking it can be used for ``use`` (predict, export,
    eval, ...): a GAN run, say, points at ``keel sample``."""
    task = task_of(spec)
    task.require(use, run_dir.name)
    return task


def load_run_config(run_dir: Path) -> RunConfig:
    from torchkeel.config import read_yaml

    return validate_config(read_yaml(run_dir / "config.yaml"))


def evaluate_run(run_dir: Path, split: str = "test", model_code: Any = None) -> dict[str, float]:
    """Re-evaluate a finished run on a split rebuilt from its own config and seed."""
    from torchkeel.evaluate.metrics import evaluate
    from torchkeel.train.losses import build_loss

    cfg = load_run_config(run_dir)
    model, spec, meta = load_model(run_dir, runtime.pick_device(cfg.train.device), model_code)
    run_task(spec, "eval", run_dir)
    data = prepare_data(cfg, spec)
    part = data.splits().get(split)
    if part is None:
        raise RunError(f"this run's data has no '{split}' split (splits: {', '.join(data.splits())})")
    loss = build_loss(meta["loss"], spec=spec)
    return evaluate(model, part, spec, loss, cfg.eval.metrics, cfg.eval.batch_size, cfg.eval.top_k, tta=cfg.eval.tta)


def metric_notes(run_dir: Path) -> dict[str, str]:
    """How a run's metrics are computed, as its task says (translation: sacreBLEU's signatures)."""
    from torchkeel.data import fitted_spec
    from torchkeel.tasks import task_of

    spec = fitted_spec(run_dir)  # data.json; None for runs older than it
    return task_of(spec).notes() if spec is not None else {}


def result_table(test: dict[str, float], summary: dict[str, Any], run_dir: Path) -> Table:
    table = Table(title="Result", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in test.items():
        table.add_row(f"test {key}", f"{value:.4f}")
    for key, note in summary.get("notes", {}).items():  # how the metrics were computed (sacreBLEU's signatures)
        table.add_row(key, note)
    if summary.get("members"):  # keel train --auto's ensemble: trained as its members, not itself
        table.add_row("ensemble of", ", ".join(f"{k} {v:.2f}" for k, v in summary["members"].items()))
    else:
        table.add_row("train time", f"{summary['train_seconds']:.1f} s ({summary['epochs']} epochs)")
    table.add_row("parameters", f"{summary['parameters']:,}")
    table.add_row("run folder", str(run_dir))
    return table
