"""The arithmetic of streaming metrics, shared by the tasks: per-class scores from a confusion
matrix, calibration error from per-bin sums, ROC-AUC and average precision from a histogram of
scores. Each works on small fixed-size tensors, so a split of any size costs fixed memory.

Written here rather than taken from torchmetrics, on purpose:
- importing torchmetrics costs 1.9-2.6 s on top of torch on 2 CPU cores
  (benchmarks/import_costs.py), paid by every ``keel train`` that evaluates on test;
- torchmetrics' calibration error keeps every confidence of the split in memory (list
  states), and its exact AUROC every score; these keep ``bins`` numbers.
The values are tested against scikit-learn (tests/test_metrics.py).
"""

from __future__ import annotations

import torch

# Guo et al. 2017 ("On Calibration of Modern Neural Networks") report ECE over 15 equal bins
ECE_BINS = 15
# Scores (logits, or logit differences for two-logit heads) are histogrammed in 4,096 equal
# bins over [-16, 16] (float32 sigmoid saturates near 16.6, so wider adds nothing). ROC-AUC
# and average precision are then exact up to scores that share a bin, which count as ties: the
# error is at most half the fraction of (positive, negative) pairs in one bin (< 1e-3 on the
# tests' data, checked against scikit-learn).
SCORE_BINS = 4096
LOGIT_RANGE = 16.0


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
