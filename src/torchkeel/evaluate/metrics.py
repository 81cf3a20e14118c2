"""Streaming metrics accumulated on the device, and ``evaluate``.

Classification metrics come from a running confusion matrix, calibration from per-bin sums
and binary ROC-AUC / PR-AUC from a histogram of scores; regression metrics from running sums.
So a split of any size is evaluated in fixed memory and with one host sync at the end.

Written here rather than taken from torchmetrics, on purpose, for every metric:
- importing torchmetrics costs 1.9-2.6 s on top of torch on 2 CPU cores
  (benchmarks/import_costs.py), paid by every ``keel train`` that evaluates on test or
  writes its report;
- torchmetrics' calibration error keeps every confidence of the split in memory (list
  states), and its exact AUROC every score; ours keep ``bins`` numbers;
- everything else (per-class table, confusion matrix) is a view of the confusion matrix the
  accumulator already keeps.
The values are tested against scikit-learn (tests/test_metrics.py).
"""

from __future__ import annotations

import torch
from torch import nn

from torchkeel.data.bundle import DataSpec, Split
from torchkeel.evaluate.tta import tta_forward
from torchkeel.train.losses import LossFn

CLASSIFICATION = ("accuracy", "top_k_accuracy", "precision", "recall", "f1", "ece", "roc_auc", "pr_auc")
BINARY_ONLY = ("roc_auc", "pr_auc")
REGRESSION = ("mse", "rmse", "mae", "r2")

# Guo et al. 2017 ("On Calibration of Modern Neural Networks") report ECE over 15 equal bins
ECE_BINS = 15
# Binary scores are histogrammed by logit: 4,096 equal bins over [-16, 16] (float32 sigmoid
# saturates near 16.6, so wider adds nothing). ROC-AUC and average precision are then exact up
# to scores that share a bin, which count as ties: the error is at most half the fraction of
# (positive, negative) pairs in one bin (< 1e-3 on the tests' data, checked against sklearn).
SCORE_BINS = 4096
LOGIT_RANGE = 16.0


def metrics_for(task: str, names: list[str]) -> list[str]:
    """The metrics of ``names`` that apply to ``task`` (others are skipped, so one metric
    list serves every task); ROC-AUC and PR-AUC are defined for binary tasks only."""
    if task == "regression":
        return [n for n in names if n in REGRESSION]
    return [n for n in names if n in CLASSIFICATION and (task == "binary" or n not in BINARY_ONLY)]


class MetricAccumulator:
    """Feed ``update(out, y, loss)`` batch by batch; ``compute()`` syncs once.

    With ``details`` it also keeps what the report shows (reliability bins, score histogram)
    even when those metrics were not asked for; :meth:`details` returns them with the
    confusion matrix and the per-class table.
    """

    def __init__(
        self, spec: DataSpec, names: list[str], device: torch.device, top_k: int = 3, *, details: bool = False
    ):
        self.spec = spec
        self.classification = spec.task != "regression"
        self.names = metrics_for(spec.task, names)
        self.top_k = min(top_k, max(1, spec.num_classes))
        c = 2 if spec.task == "binary" else spec.num_classes
        # [loss sum, count] then task-specific running sums
        self.sums = torch.zeros(2, dtype=torch.float64, device=device)
        self.has_loss = False
        self.confusion = torch.zeros(c, c, dtype=torch.int64, device=device) if self.classification else None
        self.topk_correct = torch.zeros((), dtype=torch.int64, device=device)
        # regression: [sum y, sum y^2, sum err^2, sum |err|] per target
        self.reg = torch.zeros(4, spec.targets, dtype=torch.float64, device=device)
        # calibration: [count, sum confidence, sum correct] per confidence bin
        keep_calibration = self.classification and (details or "ece" in self.names)
        self.calibration = torch.zeros(3, ECE_BINS, dtype=torch.float64, device=device) if keep_calibration else None
        # binary scores: [negatives, positives] per logit bin
        keep_scores = spec.task == "binary" and (details or any(n in BINARY_ONLY for n in self.names))
        self.scores = torch.zeros(2, SCORE_BINS, dtype=torch.int64, device=device) if keep_scores else None

    @torch.no_grad()
    def update(self, out: torch.Tensor, y: torch.Tensor, loss: torch.Tensor | None = None) -> None:
        n = y.shape[0]
        if loss is not None:
            self.has_loss = True
            self.sums[0] += loss.detach().double() * n
        self.sums[1] += n
        out = out.detach().float()
        if self.classification:
            pred = (out.view(-1) > 0).long() if self.spec.task == "binary" else out.argmax(1)
            c = self.confusion.shape[0]
            self.confusion += torch.bincount(y.long() * c + pred, minlength=c * c).view(c, c)
            if "top_k_accuracy" in self.names and self.spec.task == "classification":
                top = out.topk(self.top_k, dim=1).indices
                self.topk_correct += (top == y[:, None]).any(1).sum()
            if self.calibration is not None:
                self._update_calibration(out, pred, y)
            if self.scores is not None:
                self._update_scores(out.view(-1), y)
        else:
            y = y.view_as(out).double()
            err = out.double() - y
            self.reg += torch.stack([y.sum(0), (y * y).sum(0), (err * err).sum(0), err.abs().sum(0)])

    def _update_calibration(self, out: torch.Tensor, pred: torch.Tensor, y: torch.Tensor) -> None:
        confidence = confidence_of(out, self.spec.task)  # (B,) probability of the predicted class
        # bin i holds (i/B, (i+1)/B], as scikit-learn's calibration_curve bins
        edges = torch.linspace(0, 1, ECE_BINS + 1, device=out.device, dtype=confidence.dtype)[1:-1]
        idx = torch.bucketize(confidence, edges)
        correct = (pred == y.long()).double()
        values = torch.stack([torch.ones_like(correct), confidence.double(), correct])  # (3, B)
        self.calibration.index_add_(1, idx, values)

    def _update_scores(self, logits: torch.Tensor, y: torch.Tensor) -> None:
        idx = score_bin(logits)
        self.scores += torch.bincount(y.long() * SCORE_BINS + idx, minlength=2 * SCORE_BINS).view(2, SCORE_BINS)

    def compute(self) -> dict[str, float]:
        loss_sum, n = self.sums.tolist()
        result = {"loss": loss_sum / max(n, 1)} if self.has_loss else {}
        if self.classification:
            result.update(self._classification(int(n)))
        else:
            result.update(self._regression(n))
        return result

    def _classification(self, n: int) -> dict[str, float]:
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
        return {k: values[k] for k in self.names}

    def _regression(self, n: float) -> dict[str, float]:
        sum_y, sum_y2, sse, sae = self.reg
        mse = (sse / n).mean().item()
        variance = sum_y2 - sum_y * sum_y / n  # total sum of squares per target
        r2 = (1 - sse / variance.clamp_min(1e-12)).mean().item()
        values = {"mse": mse, "rmse": mse**0.5, "mae": (sae / n).mean().item(), "r2": r2}
        return {k: values[k] for k in self.names}

    def details(self) -> dict:
        """JSON-able tables for a classification split: confusion matrix (rows: true class,
        columns: predicted), per-class precision/recall/F1/support, reliability bins, and for
        binary tasks ROC-AUC and PR-AUC. Empty for regression."""
        if not self.classification:
            return {}
        classes = self.spec.classes or [str(i) for i in range(self.confusion.shape[0])]
        precision, recall, f1, _ = per_class_scores(self.confusion)
        support = self.confusion.sum(1)
        rows = zip(classes, precision.tolist(), recall.tolist(), f1.tolist(), support.tolist(), strict=True)
        result: dict = {
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


def per_class_scores(confusion: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Precision, recall, F1 per class from a confusion matrix (rows true, columns
    predicted); 0 where a ratio's denominator is 0 (scikit-learn's ``zero_division=0``), and
    the mask of labels present in y_true or y_pred."""
    cm = confusion.double()
    tp = cm.diag()
    support, predicted = cm.sum(1), cm.sum(0)
    present = (support + predicted) > 0
    precision = torch.where(predicted > 0, tp / predicted.clamp_min(1), 0.0)
    recall = torch.where(support > 0, tp / support.clamp_min(1), 0.0)
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return precision, recall, f1, present


def confidence_of(out: torch.Tensor, task: str) -> torch.Tensor:
    """(B,) probability the model gives its predicted class: max softmax, or for one binary
    logit max(p, 1 - p)."""
    if task == "binary":
        p = torch.sigmoid(out.view(-1))
        return torch.maximum(p, 1 - p)
    return torch.softmax(out, dim=1).amax(1)


def expected_calibration_error(calibration: torch.Tensor) -> float:
    """ECE = sum over bins of (n_bin / n) * |accuracy_bin - mean confidence_bin|."""
    count, conf_sum, correct_sum = calibration
    return ((conf_sum - correct_sum).abs().sum() / count.sum().clamp_min(1)).item()


def score_bin(logits: torch.Tensor) -> torch.Tensor:
    """Bin index of each logit (monotonic in the score, so rankings survive binning)."""
    scaled = (logits.float().clamp(-LOGIT_RANGE, LOGIT_RANGE) + LOGIT_RANGE) / (2 * LOGIT_RANGE)
    return (scaled * SCORE_BINS).long().clamp(0, SCORE_BINS - 1)


def binned_auc(scores: torch.Tensor) -> tuple[float, float]:
    """(ROC-AUC, average precision) from per-bin [negatives, positives] counts; NaN when
    the split lacks positives or negatives (both undefined then)."""
    neg, pos = scores.double().flip(1)  # highest scores first
    n_pos, n_neg = pos.sum(), neg.sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan"), float("nan")
    pos_above = pos.cumsum(0) - pos
    # Mann-Whitney: each negative is outranked by the positives in higher bins; ties count half
    roc_auc = (neg * (pos_above + 0.5 * pos)).sum() / (n_pos * n_neg)
    tp, fp = pos.cumsum(0), neg.cumsum(0)
    precision = tp / (tp + fp).clamp_min(1)
    # scikit-learn's average_precision_score: sum of (R_k - R_k-1) * P_k over thresholds
    average_precision = (pos / n_pos * precision).sum()
    return roc_auc.item(), average_precision.item()


def roc_points(scores: torch.Tensor, max_points: int = 200) -> dict[str, list[float]]:
    """False- and true-positive rates at the histogram's thresholds (thinned for plotting)."""
    neg, pos = scores.double().flip(1)
    fpr = torch.cat([torch.zeros(1, dtype=torch.float64), neg.cumsum(0) / neg.sum().clamp_min(1)])
    tpr = torch.cat([torch.zeros(1, dtype=torch.float64), pos.cumsum(0) / pos.sum().clamp_min(1)])
    keep = torch.unique(torch.linspace(0, len(fpr) - 1, max_points).round().long())
    return {"fpr": fpr[keep].tolist(), "tpr": tpr[keep].tolist()}


class TrainMeter:
    """The training loop's running loss and accuracy: two in-place adds per step on the
    device, read once per epoch (the full accumulator costs ~3% of a small CNN's step)."""

    def __init__(self, spec: DataSpec, device: torch.device):
        self.task = spec.task
        self.totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, n

    @torch.no_grad()
    def update(self, out: torch.Tensor, y: torch.Tensor, loss: torch.Tensor) -> None:
        n = y.shape[0]
        self.totals[0] += loss.detach() * n
        if self.task == "classification":
            self.totals[1] += (out.argmax(1) == y).sum()
        elif self.task == "binary":
            self.totals[1] += ((out.view(-1) > 0) == (y > 0.5)).sum()
        self.totals[2] += n

    def compute(self) -> dict[str, float]:
        loss_sum, correct, n = self.totals.tolist()
        result = {"loss": loss_sum / max(n, 1)}
        if self.task != "regression":
            result["accuracy"] = correct / max(n, 1)
        return result


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    split: Split,
    spec: DataSpec,
    loss_fn: LossFn | None,
    metrics: list[str],
    batch_size: int = 1024,
    top_k: int = 3,
    tta: str = "none",
) -> dict[str, float]:
    """Loss and metrics of ``model`` over ``split`` in large batches, model left in eval mode.
    ``tta``: average image logits over mirrored (and shifted) copies (evaluate/tta.py)."""
    model.eval()
    device = next(model.parameters()).device
    acc = MetricAccumulator(spec, metrics, device, top_k)
    for start in range(0, len(split), batch_size):
        x = split.x[start : start + batch_size].to(device, non_blocking=True)
        y = split.y[start : start + batch_size].to(device, non_blocking=True)
        out = tta_forward(model, x, tta)
        acc.update(out, y, loss_fn(out, y) if loss_fn else None)
    return acc.compute()
