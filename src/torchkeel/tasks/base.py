"""The Task: everything that differs between kinds of problem, in one declarative object.

A task says what a target is and how a batch of them is formed, how a batch's loss is
computed, which metrics it streams and which one is key, how raw outputs become predictions
(the JSON that ``keel predict``, the server and the page share), and which of the workbench's
tools apply to it. The rest of torchkeel asks the task of a DataSpec (``tasks.task_of``) and
never compares task names. Facts are fields; behaviour is plain functions of the task's module,
so a new task is one module and one registry line (docs/architecture.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from torchkeel.errors import RunError

# tasks/ imports nothing of data/, not even for typing (data.bundle asks the task for sizes)
DataSpec = Any  # a torchkeel.data.bundle.DataSpec
DataBundle = Any  # a torchkeel.data.bundle.DataBundle
Split = Any  # a torchkeel.data.bundle.Split

LossFn = Callable[[Any, Any], torch.Tensor]


class Accumulator(Protocol):
    """Streaming metrics: ``update`` per batch on the device, ``compute`` syncs once. Its
    running sums are tensors in ``vars(self)``, so ``train.distributed`` can all-reduce them."""

    def update(self, out: Any, y: Any, loss: torch.Tensor | None = None) -> None: ...
    def compute(self) -> dict[str, float]: ...
    def details(self) -> dict[str, Any]: ...


# what a task may be used for; `Task.require` refuses the rest with one line
USES = (
    "predict",
    "serve",
    "export",
    "eval",
    "explain",
    "attack",
    "tta",
    "sample",
    "generate",
    "class_weights",
    "finetune",
)


def model_forward_loss(forward: Callable, x: Any, y: Any, loss_fn: LossFn) -> tuple[Any, torch.Tensor]:
    """The usual step: the model's outputs, then the task's loss of them."""
    out = forward(x)
    return out, loss_fn(out, y)


@dataclass(frozen=True)
class Task:
    name: str
    description: str  # "multi-class classification", shown in summaries and the server's docs
    losses: tuple[str, ...]  # the losses that fit; the first is what ``train.loss: auto`` picks
    metrics: tuple[str, ...]  # every metric the task can compute
    key_metric: str  # the one that ranks runs (keel runs, early stopping, tune, the result table)
    lower_is_better: frozenset[str]
    uses: frozenset[str]
    output_size: Callable[[DataSpec], int]  # the model's output width
    build_loss: Callable[..., LossFn]  # (name, spec, label_smoothing, class_weights) -> loss
    accumulator: Callable[..., Accumulator] | None  # (spec, names, device, top_k, details=)
    train_meter: Callable[[DataSpec, torch.device], Any] | None  # the loop's running loss (+accuracy)
    decode: Callable[[torch.Tensor, DataSpec, int], list[dict[str, Any]]] | None  # outputs -> predictions
    loop: str = "fit"  # which training loop: "fit" (forward, loss, backward) or "gan"
    server: str = "predict"  # which server: "predict" (POST /predict) or "generate"
    # (forward, x, y, loss_fn) -> (outputs, loss): the model's outputs then a named loss, or a
    # loss the model returns itself (as torchvision's detectors do in training mode)
    forward_loss: Callable[..., tuple[Any, torch.Tensor]] = model_forward_loss
    # the same for evaluation, where it differs from ``forward(x)`` then the loss (translation:
    # the teacher-forced loss and the decoded sentences); None: the model's outputs and their loss
    eval_forward_loss: Callable[..., tuple[Any, torch.Tensor]] | None = None
    # outputs -> predicted class index per sample (attack, quantize, analysis); None: no classes
    predict_index: Callable[[torch.Tensor], torch.Tensor] | None = None
    # outputs -> (B, C) class probabilities; None: no classes
    probabilities: Callable[[torch.Tensor], torch.Tensor] | None = None
    # (B, C) class probabilities -> outputs whose ``probabilities`` they are (an ensemble's mean)
    from_probabilities: Callable[[torch.Tensor], torch.Tensor] | None = None
    # outputs -> one score per class (explain's attributions, robustness); None: the outputs
    class_scores: Callable[[torch.Tensor], torch.Tensor] | None = None
    export_output: str = ""  # what an exported model's output means
    # how ``keel export`` writes the model: "graph" (one function of the input) or
    # "encoder_decoder" (an encoder and a decoder step that a decoding loop calls: translation)
    export_as: str = "graph"
    # a batch size the exported graph is fixed to, where its post-processing loops over the
    # images of a batch (a detector's box decoding and NMS, traced: one image); None: free
    export_batch: int | None = None
    # () -> how the metrics were computed, shown under them and kept in summary.json
    # (translation: sacreBLEU's signatures, which say what a BLEU score is comparable with)
    notes: Callable[[], dict[str, str]] = field(default=lambda: {})
    train_metrics: tuple[str, ...] = ()  # logged as train/NAME besides train/loss
    # (bundle, loss name) -> the bundle this task trains on (bce on two classes: one logit)
    prepare: Callable[[DataBundle, str], DataBundle] = field(default=lambda bundle, loss: bundle)
    # (model, training split) -> the samples this model can learn from (CTC: clips with frames
    # enough for their transcripts); told on stderr, never silent
    admit: Callable[[Any, Split], Split] = field(default=lambda model, split: split)
    # model -> a context the loop validates in each epoch (translation: greedy instead of beam search)
    validation: Callable[[Any], Any] = field(default=lambda model: contextlib.nullcontext())
    refusal_hint: str = ""  # added to a refusal by `require`; {run} is the run's name
    # (chosen names, spec) -> the metrics computed for this data (two-class AUCs, say)
    adjust_metrics: Callable[[list[str], DataSpec], list[str]] | None = None
    # the report sections this task adds to the common ones, by key (evaluate/report.py SECTIONS)
    report_sections: tuple[str, ...] = ()
    # a sample's target is a class index: the report shows the class balance and each image's class
    class_targets: bool = False
    # a prediction per pixel (segmentation): only models that output a map fit (models.DENSE), and
    # geometric augmentation moves the target masks with the pixels
    dense: bool = False
    # boxes per image (detection): only detectors fit (models.DETECTORS), and augmentation moves
    # the boxes with the pixels
    boxes: bool = False
    # (prediction, spec, (height, width) of the image as read) -> the prediction in that image's
    # pixels (detection: boxes back through the letterbox); None: predictions need no mapping
    to_image: Callable[[dict[str, Any], DataSpec, tuple[int, int]], dict[str, Any]] | None = None
    # whether evaluation computes a loss (a detector computes its losses only in training mode)
    eval_loss: bool = True

    @property
    def output_form(self) -> str:
        """What a model must output for this task: "boxes", "pixel" maps, or one per "sample"."""
        return "boxes" if self.boxes else "pixel" if self.dense else "sample"

    def resolve_loss(self, name: str, spec: DataSpec) -> str:
        """``auto`` becomes the task's loss; a loss that cannot fit is a ConfigError."""
        from torchkeel.errors import ConfigError

        if name == "auto":
            return self.losses[0]
        if name not in self.losses:
            raise ConfigError(
                f"train.loss: '{name}' does not fit data '{spec.name}', a {self.description} task; "
                f"use {' or '.join(repr(n) for n in self.losses)} (or 'auto')"
            )
        return name

    def own_metrics(self, names: list[str]) -> list[str]:
        """The metrics of ``names`` this task computes (others are skipped, so one metric list
        serves every task). None of them (a regression run with the classification default,
        say): the task's key metric, which ranks its runs."""
        return [n for n in names if n in self.metrics] or [m for m in (self.key_metric,) if m in self.metrics]

    def select_metrics(self, names: list[str], spec: DataSpec | None = None) -> list[str]:
        """:meth:`own_metrics`; with ``spec``, as computed on that data."""
        chosen = self.own_metrics(names)
        return self.adjust_metrics(chosen, spec) if self.adjust_metrics and spec is not None else chosen

    def logged(self, names: list[str], has_val: bool, spec: DataSpec | None = None) -> list[str]:
        """The per-epoch keys the loop logs, e.g. train/loss, val/accuracy."""
        keys = ["train/loss"] + [f"train/{m}" for m in self.train_metrics]
        if has_val:
            keys += ["val/loss"] * self.eval_loss + [f"val/{m}" for m in self.select_metrics(names, spec)]
        return keys

    def outputs(self, forward: Callable, x: Any, y: Any, loss_fn: LossFn | None) -> tuple[Any, torch.Tensor | None]:
        """Evaluation's outputs of a batch and their loss (None without a loss function), as
        the task forms them (translation: the teacher-forced loss and the decoded sentences)."""
        if loss_fn is None:
            return forward(x), None
        if self.eval_forward_loss is not None:
            return self.eval_forward_loss(forward, x, y, loss_fn)
        out = forward(x)  # the model in eval mode: its predictions (a detector's boxes), not its losses
        return out, loss_fn(out, y)

    def require(self, use: str, where: str) -> None:
        """One line when ``where`` (a run, a model) is used for something this task does not do."""
        if use not in self.uses:
            hint = self.refusal_hint.format(run=where)
            raise RunError(f"{where} is a {self.description} run: it cannot {_VERB[use]}{hint}")


_VERB = {
    "predict": "predict",
    "serve": "be served",
    "export": "be exported",
    "eval": "be evaluated on a split",
    "explain": "be explained with saliency maps",
    "attack": "be attacked (adversarial evaluation needs class predictions)",
    "tta": "use test-time augmentation",
    "sample": "draw samples",
    "generate": "generate text (it is not a language model)",
    "class_weights": "use class weights",
    "finetune": "be fine-tuned in a second phase",
}
