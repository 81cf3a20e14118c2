"""Classification: multi-class (one logit per class, softmax) and binary (one logit, sigmoid).

Targets are int64 class indices (N,), or float32 0/1 (N,) for the one-logit head. Metrics come
from a running confusion matrix, calibration from per-bin sums and, whenever there are two
classes (either head), ROC-AUC and PR-AUC from a histogram of scores: so a target column with
two values gets them without asking, as a one-logit binary model does.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F

from torchkeel.errors import ConfigError
from torchkeel.tasks.base import Task
from torchkeel.tasks.meter import TrainMeter, add_loss
from torchkeel.tasks.scores import (
    ECE_BINS,
    SCORE_BINS,
    binned_auc,
    expected_calibration_error,
    per_class_scores,
    roc_points,
    score_bin,
)

METRICS = ("accuracy", "top_k_accuracy", "precision", "recall", "f1", "ece", "roc_auc", "pr_auc")
TWO_CLASS_ONLY = ("roc_auc", "pr_auc")
BINARY_NAME = "binary"


def predict_index(out: torch.Tensor, one_logit: bool) -> torch.Tensor:
    """(B,) predicted class: argmax, or logit > 0 for one binary logit."""
    return (out.view(-1) > 0).long() if one_logit else out.argmax(1)


def class_scores(out: torch.Tensor, one_logit: bool) -> torch.Tensor:
    """(B, C) one score per class: a binary logit z becomes (-z, z), whose softmax is (1-p, p)."""
    return torch.cat([-out, out], dim=1) if one_logit else out


def probabilities(out: torch.Tensor, one_logit: bool) -> torch.Tensor:
    """(B, C) class probabilities."""
    if one_logit:
        p1 = torch.sigmoid(out.view(-1))
        return torch.stack([1 - p1, p1], dim=1)
    return torch.softmax(out, dim=1)


def from_probabilities(p: torch.Tensor, one_logit: bool) -> torch.Tensor:
    """The outputs whose ``probabilities`` are ``p`` (B, C): log p, or one logit log(p1 / p0)."""
    logs = p.clamp_min(1e-12).log()
    return (logs[:, 1] - logs[:, 0])[:, None] if one_logit else logs


def two_class_score(out: torch.Tensor, one_logit: bool) -> torch.Tensor:
    """(B,) a score monotone in P(class 1): the logit, or z1 - z0 for two logits (their softmax
    p1 = sigmoid(z1 - z0), so the ranking and hence the AUCs are the same)."""
    return out.view(-1) if one_logit else out[:, 1] - out[:, 0]


def decode(out: torch.Tensor, spec: Any, k: int, one_logit: bool) -> list[dict[str, Any]]:
    """The top-``k`` classes of each sample with their probabilities."""
    probs = probabilities(out.float(), one_logit)
    values, indices = probs.topk(min(k, probs.shape[1]), dim=1)
    classes = spec.classes or [str(i) for i in range(probs.shape[1])]
    return [
        {"top": [{"class": classes[i], "probability": float(v)} for v, i in zip(vs, ix, strict=True)]}
        for vs, ix in zip(values.tolist(), indices.tolist(), strict=True)
    ]


def build_loss(name: str, spec: Any, label_smoothing: float = 0.0, weights: torch.Tensor | None = None):
    """Cross-entropy (class weights, label smoothing) or, for one logit, BCE whose positive
    class is weighted by weights[1] / weights[0]."""
    if name == "cross_entropy":
        return lambda out, y: F.cross_entropy(out, y, weight=weights, label_smoothing=label_smoothing)
    pos_weight = None if weights is None else weights[1:2] / weights[0]
    return lambda out, y: F.binary_cross_entropy_with_logits(out.view(-1), y.float(), pos_weight=pos_weight)


class ClassAccumulator:
    """Confusion matrix, top-k hits, calibration bins and (two classes) a score histogram,
    all on the device."""

    def __init__(
        self, spec: Any, names: list[str], device: torch.device, top_k: int, *, details: bool, one_logit: bool
    ):
        self.spec, self.one_logit = spec, one_logit
        c = 2 if one_logit else spec.num_classes
        two = c == 2
        self.names = metric_names([n for n in names if n in METRICS], spec)
        self.top_k = min(top_k, max(1, c))
        self.sums = torch.zeros(2, dtype=torch.float64, device=device)  # [loss sum, count]
        self.has_loss = False
        self.confusion = torch.zeros(c, c, dtype=torch.int64, device=device)
        self.topk_correct = torch.zeros((), dtype=torch.int64, device=device)
        # calibration: [count, sum confidence, sum correct] per confidence bin
        keep_calibration = details or "ece" in self.names
        self.calibration = torch.zeros(3, ECE_BINS, dtype=torch.float64, device=device) if keep_calibration else None
        # two classes: [negatives, positives] per score bin
        self.scores = torch.zeros(2, SCORE_BINS, dtype=torch.int64, device=device) if two else None

    @torch.no_grad()
    def update(self, out: torch.Tensor, y: torch.Tensor, loss: torch.Tensor | None = None) -> None:
        self.has_loss |= add_loss(self.sums, loss, y.shape[0])
        out = out.detach().float()
        pred = predict_index(out, self.one_logit)
        c = self.confusion.shape[0]
        self.confusion += torch.bincount(y.long() * c + pred, minlength=c * c).view(c, c)
        if "top_k_accuracy" in self.names and not self.one_logit:
            self.topk_correct += (out.topk(self.top_k, dim=1).indices == y[:, None]).any(1).sum()
        if self.calibration is not None:
            confidence = probabilities(out, self.one_logit).amax(1)  # (B,) of the predicted class
            # bin i holds (i/B, (i+1)/B], as scikit-learn's calibration_curve bins
            edges = torch.linspace(0, 1, ECE_BINS + 1, device=out.device, dtype=confidence.dtype)[1:-1]
            correct = (pred == y.long()).double()
            values = torch.stack([torch.ones_like(correct), confidence.double(), correct])  # (3, B)
            self.calibration.index_add_(1, torch.bucketize(confidence, edges), values)
        if self.scores is not None:
            idx = score_bin(two_class_score(out, self.one_logit))
            self.scores += torch.bincount(y.long() * SCORE_BINS + idx, minlength=2 * SCORE_BINS).view(2, SCORE_BINS)

    def compute(self) -> dict[str, float]:
        loss_sum, n = self.sums.tolist()
        result = {"loss": loss_sum / max(n, 1)} if self.has_loss else {}
        precision, recall, f1, present = per_class_scores(self.confusion)
        values = {
            "accuracy": (self.confusion.diag().sum() / max(n, 1)).item(),
            "top_k_accuracy": self.topk_correct.item() / max(n, 1),
            # like scikit-learn: macro averages over the labels present in y_true or y_pred
            "precision": precision[present].mean().item(),
            "recall": recall[present].mean().item(),
            "f1": f1[present].mean().item(),
        }
        if self.calibration is not None:
            values["ece"] = expected_calibration_error(self.calibration)
        if self.scores is not None:
            values["roc_auc"], values["pr_auc"] = binned_auc(self.scores)
        return result | {k: values[k] for k in self.names}

    def details(self) -> dict[str, Any]:
        """JSON-able tables: confusion matrix (rows: true class, columns: predicted), per-class
        precision/recall/F1/support, reliability bins, and for two classes ROC-AUC, PR-AUC and
        the ROC curve."""
        classes = self.spec.classes or [str(i) for i in range(self.confusion.shape[0])]
        precision, recall, f1, _ = per_class_scores(self.confusion)
        support = self.confusion.sum(1)
        rows = zip(classes, precision.tolist(), recall.tolist(), f1.tolist(), support.tolist(), strict=True)
        result: dict[str, Any] = {
            "classes": classes,
            "confusion_matrix": self.confusion.tolist(),
            "per_class": [
                {"class": c, "precision": p, "recall": r, "f1": f, "support": int(s)} for c, p, r, f, s in rows
            ],
        }
        if self.calibration is not None:
            count, conf_sum, correct_sum = self.calibration.tolist()
            result["reliability"] = {"bins": ECE_BINS, "count": count, "confidence": conf_sum, "correct": correct_sum}
            result["ece"] = expected_calibration_error(self.calibration)
        if self.scores is not None:
            result["roc_auc"], result["pr_auc"] = binned_auc(self.scores)
            result["roc_curve"] = roc_points(self.scores)
        return result


def metric_names(names: list[str], spec: Any) -> list[str]:
    """ROC-AUC and PR-AUC are defined for two classes, and computed for every two-class
    problem (asked for or not); for more classes they are skipped."""
    two = spec.task == BINARY_NAME or spec.num_classes == 2
    return [n for n in names if two or n not in TWO_CLASS_ONLY] + [n for n in TWO_CLASS_ONLY if two and n not in names]


def _correct(out: torch.Tensor, y: torch.Tensor, one_logit: bool) -> torch.Tensor:
    if one_logit:
        return ((out.view(-1) > 0) == (y > 0.5)).sum()
    return (out.argmax(1) == y).sum()


def as_one_logit(bundle: Any, loss: str) -> Any:
    """``loss: bce`` on two classes: one sigmoid logit, float 0/1 targets (the binary task)."""
    if loss != "bce":
        return bundle
    if bundle.spec.num_classes != 2:
        raise ConfigError(
            f"train.loss: 'bce' is for two classes; data '{bundle.spec.name}' has {bundle.spec.num_classes}: "
            "use 'cross_entropy' (or 'auto')"
        )
    bundle.spec.task = "binary"
    splits = {k: dataclasses.replace(v, y=v.y.float()) for k, v in bundle.splits().items()}
    return dataclasses.replace(bundle, train=splits["train"], val=splits.get("val"), test=splits["test"])


def _task(one_logit: bool, **facts: Any) -> Task:
    return Task(
        metrics=METRICS,
        key_metric="accuracy",
        lower_is_better=frozenset({"loss", "ece"}),
        uses=frozenset({"predict", "serve", "export", "eval", "explain", "attack", "tta", "class_weights", "finetune"}),
        build_loss=build_loss,
        accumulator=partial(ClassAccumulator, one_logit=one_logit),
        train_meter=lambda spec, device: TrainMeter(device, partial(_correct, one_logit=one_logit)),
        decode=partial(decode, one_logit=one_logit),
        predict_index=partial(predict_index, one_logit=one_logit),
        class_scores=partial(class_scores, one_logit=one_logit),
        probabilities=partial(probabilities, one_logit=one_logit),
        from_probabilities=partial(from_probabilities, one_logit=one_logit),
        train_metrics=("accuracy",),
        adjust_metrics=metric_names,
        report_sections=("confusion", "per-class", "wrong", "calibration", "robustness"),
        class_targets=True,
        **facts,
    )


MULTICLASS = _task(
    False,
    name="classification",
    description="classification",
    losses=("cross_entropy", "bce"),  # bce on two classes: `prepare` makes it the binary task
    output_size=lambda spec: spec.num_classes,
    export_output="logits: softmax over the last axis gives the probabilities of 'classes', in order",
    prepare=as_one_logit,
)
BINARY = _task(
    True,
    name=BINARY_NAME,
    description="binary classification",
    losses=("bce",),
    output_size=lambda spec: 1,
    export_output="one logit: sigmoid gives the probability of classes[1]",
)
