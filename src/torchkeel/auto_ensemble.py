"""``keel train --auto``'s last candidate: an ensemble of the recipes it trained.

Choosing one recipe on the val split is choosing on noise when recipes are within a point of
each other (a few hundred val texts), while models that err differently (tf-idf words and a
pretrained encoder's sentence vectors, say) are more accurate averaged than either alone. So
after the candidates, --auto weighs them by Caruana et al.'s ensemble selection (2004, "Ensemble
selection from libraries of models"; AutoGluon's default, Erickson et al. 2020): ``ROUNDS``
greedy steps, each adding (with replacement) the candidate whose addition most lowers the
val log loss of the running mean of class probabilities; a candidate's weight is the share of
steps that chose it. With two or more members it joins the leaderboard as ``ensemble``, ranked
by the same val metric as the others (cross-fitted, below; a tie goes to the single recipe,
which costs less at every prediction), and when it wins its
run folder is the result: one model (models/ensemble.py) that eval, predict, serve, report and
export take as any other run.

The weights are fitted on the very val rows that rank the candidates, which flatters the
ensemble: on 212 val texts one lucky row is half a point. So the val metrics it is ranked by
are cross-fitted (``FOLDS``): each half of the val rows is scored by the ensemble whose weights
were chosen on the other half, as stacking scores on out-of-fold predictions (Wolpert 1992;
AutoGluon's stacker, Erickson et al. 2020). Its saved weights are still chosen on all val rows.

Each candidate's val probabilities are saved by its training (``VAL_FILE``), so the selection
costs no model evaluation; only the ensemble's test evaluation, if it wins, runs its members.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn

from torchkeel import atomic, runs
from torchkeel.config import read_yaml, validate_config
from torchkeel.data import FITTED_SPEC, DataBundle
from torchkeel.data.bundle import DataSpec
from torchkeel.data.tokenize import ConcatTokenizer, tokenizer_from_dict
from torchkeel.evaluate.tta import tta_forward
from torchkeel.tasks import Task, task_of
from torchkeel.train.session import discarded_on_failure

VAL_FILE = "val_probabilities.safetensors"  # a --auto candidate's class probabilities on the val split
ROUNDS = 20  # greedy steps: weights in twentieths
FOLDS = 2  # of the val rows, for the ensemble's cross-fitted val metrics


@torch.no_grad()
def save_val_probabilities(
    run_dir: Path, model: nn.Module, data: DataBundle, task: Task, batch_size: int, tta: str = "none"
) -> None:
    """The trained model's (N, C) class probabilities on the val split (``eval.tta``'s views
    averaged, as its val metrics are), with its targets."""
    val = data.val
    if task.probabilities is None or val is None or not isinstance(val.x, torch.Tensor):
        return
    device = next(model.parameters()).device
    model.eval()
    forward = functools.partial(tta_forward, model, mode=tta)  # as evaluate() measures the val metrics
    probs = torch.cat([task.probabilities(forward(x.to(device))).float().cpu() for x in val.x.split(batch_size)])
    tensors = {"probabilities": probs.contiguous(), "y": val.y.contiguous()}
    atomic.write_bytes(run_dir / VAL_FILE, safetensors.torch.save(tensors))


def greedy_counts(probs: list[torch.Tensor], y: torch.Tensor, rounds: int = ROUNDS) -> list[int]:
    """Caruana's selection with replacement: how often each model was added to the mean of
    class probabilities ``probs`` (each (N, C)) that lowers the log loss on targets ``y`` most."""
    counts, total = [0] * len(probs), torch.zeros_like(probs[0], dtype=torch.float64)
    rows, y = torch.arange(len(y)), y.long()  # a one-logit (bce) run's targets are floats
    for step in range(1, rounds + 1):
        losses = [-((total + p) / step)[rows, y].clamp_min(1e-12).log().mean().item() for p in probs]
        best = min(range(len(probs)), key=lambda i: (losses[i], i))  # a tie: the earlier recipe
        counts[best] += 1
        total += probs[best]
    return counts


def cross_fitted(probs: list[torch.Tensor], y: torch.Tensor, folds: int = FOLDS) -> torch.Tensor:
    """Out-of-fold ensemble probabilities (N, C): the rows of each fold (every ``folds``-th row;
    the val split is already in random order) averaged with the weights ``greedy_counts``
    chooses on the other folds' rows."""
    fold = torch.arange(len(y)) % folds
    out = torch.zeros_like(probs[0], dtype=torch.float64)
    for k in range(folds):
        held = fold == k
        counts = greedy_counts([p[~held] for p in probs], y[~held])
        out[held] = sum(c * p[held].double() for c, p in zip(counts, probs, strict=True)) / sum(counts)
    return out


def ensemble_spec(specs: list[DataSpec]) -> DataSpec | None:
    """The DataSpec an ensemble of models with these DataSpecs reads, or None when their data
    differs beyond a tokeniser (other classes, or other inputs)."""
    first = specs[0]
    if any((s.task, s.classes, s.kind) != (first.task, first.classes, first.kind) for s in specs):
        return None
    spec = DataSpec.from_dict(copy.deepcopy(first.to_dict()))
    if all("tokenizer" in s.extra for s in specs):  # text, read by each member its own way
        concat = ConcatTokenizer([(tokenizer_from_dict(s.extra["tokenizer"]), s.input_shape[0]) for s in specs])
        spec.input_shape = (concat.width,)
        # vocab_size: ids below it are valid in every member (the random ids an export checks with)
        vocab = min(int(s.extra["vocab_size"]) for s in specs)
        spec.extra.update(tokenizer=concat.to_dict(), vocab_size=vocab, widths=[s.input_shape[0] for s in specs])
        spec.extra.pop("truncated", None)
    elif any(s.to_dict() != first.to_dict() for s in specs):
        return None
    spec.extra["members"] = [s.to_dict() for s in specs]
    return spec


def build_ensemble(
    entries: list[dict[str, Any]], name: str, metric: str, counts: list[int] | None = None
) -> dict[str, Any] | None:
    """The leaderboard entry of the ensemble of ``entries``' trained runs, its run folder
    written; None when fewer than two of them get a weight or their data cannot be combined.
    ``counts``: each trained run's share of ``ROUNDS`` given (default: chosen on val)."""
    from torchkeel.models.ensemble import Ensemble
    from torchkeel.run_model import load_model, save_model

    trained = [e for e in entries if "run" in e and (Path(e["run"]) / VAL_FILE).is_file()]
    if len(trained) < 2:
        return None
    saved = [safetensors.torch.load_file(str(Path(e["run"]) / VAL_FILE)) for e in trained]
    y = saved[0]["y"]
    if any(not torch.equal(s["y"], y) for s in saved):
        return None  # not the same val split
    probs = [s["probabilities"].double() for s in saved]
    # weights chosen on val: its val metrics are cross-fitted (too few rows to split: in-sample)
    fitted = counts is None and len(y) >= 2 * FOLDS
    counts = greedy_counts(probs, y) if counts is None else counts
    chosen = [i for i, c in enumerate(counts) if c]
    if len(chosen) < 2:
        return None
    loaded = [load_model(Path(trained[i]["run"])) for i in chosen]
    spec = ensemble_spec([spec for _, spec, _ in loaded])
    if spec is None:
        return None
    weights = [counts[i] / sum(counts) for i in chosen]
    raw = read_yaml(Path(trained[chosen[0]]["run"]) / "config.yaml")
    raw["name"] = f"{name}-auto-ensemble"
    raw["model"] = {"name": "ensemble", "members": [meta["model"] for _, _, meta in loaded], "weights": weights}
    if spec.member_widths is not None:  # one row of ids per text, no part of it cut
        raw["data"].setdefault("text", {}).update(max_length=spec.input_shape[0], ngrams=1)
    cfg = validate_config(raw)
    model = Ensemble([m for m, _, _ in loaded], weights, spec.member_widths, spec)
    task = task_of(spec)
    mean = cross_fitted(probs, y) if fitted else sum(w * probs[i] for w, i in zip(weights, chosen, strict=True))
    val = _metrics(task.from_probabilities(mean.float()), y, spec, cfg)
    members = {trained[i]["recipe"]: w for i, w in zip(chosen, weights, strict=True)}
    summary = {
        "val": val,
        "val_cross_fitted": fitted,
        "epochs": 0,
        "members": members,
        "train_seconds": 0.0,
        "parameters": sum(p.numel() for p in model.parameters()),
        "data": cfg.data.name,
        "model": "ensemble",
        "task": task.name,
        "key_metric": task.key_metric,
    }
    run_dir = runs.create_run(cfg.out_dir, cfg.name)
    with discarded_on_failure(run_dir):  # a half-written folder is removed
        atomic.write_text(run_dir / "config.yaml", cfg.to_yaml())
        atomic.write_json(run_dir / FITTED_SPEC, spec.to_dict())
        save_model(run_dir, model, cfg, spec, loaded[0][2]["loss"])
        atomic.write_json(run_dir / "summary.json", summary)
    return {
        "recipe": "ensemble",
        "state": "complete",
        "val": float(val[metric]),
        "val_loss": float(val.get("loss", float("nan"))),
        "run": str(run_dir),
        "epochs": 0,
        "members": members,
    }


def _metrics(out: torch.Tensor, y: torch.Tensor, spec: DataSpec, cfg: Any) -> dict[str, float]:
    """The val metrics of outputs ``out``, by the evaluation's own accumulator and loss."""
    from torchkeel.evaluate.metrics import MetricAccumulator
    from torchkeel.train.losses import build_loss, resolve_loss

    loss_fn = build_loss(resolve_loss(cfg.train.loss, spec), spec=spec)
    acc = MetricAccumulator(spec, cfg.eval.metrics, torch.device("cpu"), cfg.eval.top_k)
    outputs, loss = task_of(spec).outputs(lambda x: x, out, y, loss_fn)
    acc.update(outputs, y, loss)
    return acc.compute()
