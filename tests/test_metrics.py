import numpy as np
import pytest
import torch
from sklearn import metrics as sk

from torchkeel.data.bundle import DataSpec
from torchkeel.evaluate.metrics import MetricAccumulator

ALL = ["accuracy", "top_k_accuracy", "precision", "recall", "f1", "mse", "rmse", "mae", "r2"]


def _spec(task, classes=None, targets=1):
    return DataSpec("t", "table", task, (3,), classes=classes, targets=targets)


def _feed(acc, out, y, chunks=4):
    for o, t in zip(out.chunk(chunks), y.chunk(chunks), strict=True):
        acc.update(o, t)
    return acc.compute()


def test_classification_matches_sklearn():
    g = torch.Generator().manual_seed(0)
    out = torch.randn(500, 5, generator=g)
    y = torch.randint(0, 5, (500,), generator=g)
    y[:50] = out[:50].argmax(1)
    got = _feed(MetricAccumulator(_spec("classification", list("abcde")), ALL, torch.device("cpu")), out, y)
    pred = out.argmax(1).numpy()
    assert got["accuracy"] == pytest.approx(sk.accuracy_score(y, pred))
    assert got["precision"] == pytest.approx(sk.precision_score(y, pred, average="macro", zero_division=0))
    assert got["recall"] == pytest.approx(sk.recall_score(y, pred, average="macro", zero_division=0))
    assert got["f1"] == pytest.approx(sk.f1_score(y, pred, average="macro", zero_division=0))
    topk = sk.top_k_accuracy_score(y, out.numpy(), k=3, labels=np.arange(5))
    assert got["top_k_accuracy"] == pytest.approx(topk)
    assert set(got) == {"accuracy", "top_k_accuracy", "precision", "recall", "f1"}


def test_macro_average_skips_absent_labels_like_sklearn():
    out = torch.tensor([[5.0, 0, 0, 0], [0, 5.0, 0, 0], [5.0, 0, 0, 0]])
    y = torch.tensor([0, 1, 1])  # labels 2 and 3 never appear
    got = _feed(MetricAccumulator(_spec("classification", list("abcd")), ["f1"], torch.device("cpu")), out, y, 1)
    assert got["f1"] == pytest.approx(sk.f1_score(y, out.argmax(1), average="macro"))


def test_binary_logit():
    g = torch.Generator().manual_seed(1)
    out = torch.randn(200, 1, generator=g)
    y = (torch.rand(200, generator=g) < 0.4).float()
    got = _feed(MetricAccumulator(_spec("binary", ["no", "yes"]), ALL, torch.device("cpu")), out, y)
    pred = (out.view(-1) > 0).long().numpy()
    assert got["accuracy"] == pytest.approx(sk.accuracy_score(y, pred))
    assert got["f1"] == pytest.approx(sk.f1_score(y, pred, average="macro"))


def test_regression_matches_sklearn():
    g = torch.Generator().manual_seed(2)
    y = torch.randn(300, 2, generator=g)
    out = y + 0.3 * torch.randn(300, 2, generator=g)
    got = _feed(MetricAccumulator(_spec("regression", targets=2), ALL, torch.device("cpu")), out, y)
    assert got["mse"] == pytest.approx(sk.mean_squared_error(y, out))
    assert got["rmse"] == pytest.approx(sk.mean_squared_error(y, out) ** 0.5)
    assert got["mae"] == pytest.approx(sk.mean_absolute_error(y, out))
    assert got["r2"] == pytest.approx(sk.r2_score(y, out))
    assert set(got) == {"mse", "rmse", "mae", "r2"}


def test_loss_is_a_sample_weighted_mean():
    acc = MetricAccumulator(_spec("regression"), ["mse"], torch.device("cpu"))
    acc.update(torch.zeros(1, 1), torch.zeros(1, 1), torch.tensor(1.0))
    acc.update(torch.zeros(3, 1), torch.zeros(3, 1), torch.tensor(5.0))
    assert acc.compute()["loss"] == pytest.approx((1 + 15) / 4)


# ---- confusion matrix, per-class table, calibration, binary AUC (issue: evaluate and tune)


def _ece_reference(confidence: np.ndarray, correct: np.ndarray, bins: int) -> float:
    """ECE from scikit-learn's calibration_curve (per-bin accuracy and mean confidence of the
    non-empty bins) weighted by the bins' sizes, binned exactly as calibration_curve does."""
    from sklearn.calibration import calibration_curve

    prob_true, prob_pred = calibration_curve(correct, confidence, n_bins=bins, strategy="uniform")
    counts = np.bincount(np.searchsorted(np.linspace(0, 1, bins + 1)[1:-1], confidence), minlength=bins)
    counts = counts[counts > 0]
    return float(np.sum(counts / counts.sum() * np.abs(prob_true - prob_pred)))


def test_details_match_sklearn_confusion_and_per_class():
    from torchkeel.evaluate.metrics import ECE_BINS

    g = torch.Generator().manual_seed(3)
    out = 2 * torch.randn(800, 4, generator=g)
    y = torch.randint(0, 4, (800,), generator=g)
    y[:300] = out[:300].argmax(1)
    acc = MetricAccumulator(_spec("classification", list("abcd")), ["accuracy", "ece"], torch.device("cpu"))
    got = _feed(acc, out, y)
    details = acc.details()
    pred = out.argmax(1).numpy()
    assert details["confusion_matrix"] == sk.confusion_matrix(y, pred, labels=range(4)).tolist()
    p, r, f, s = sk.precision_recall_fscore_support(y, pred, labels=range(4), zero_division=0)
    for row, pi, ri, fi, si in zip(details["per_class"], p, r, f, s, strict=True):
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx((pi, ri, fi))
        assert row["support"] == si
    confidence = torch.softmax(out, 1).amax(1).numpy()
    correct = (pred == y.numpy()).astype(int)
    assert got["ece"] == pytest.approx(_ece_reference(confidence, correct, ECE_BINS), abs=1e-6)
    assert details["ece"] == pytest.approx(got["ece"])
    assert sum(details["reliability"]["count"]) == 800


def test_binary_auc_and_ece_match_sklearn_within_binning():
    g = torch.Generator().manual_seed(4)
    y = (torch.rand(3000, generator=g) < 0.3).float()
    out = (1.5 * y - 0.7 + 1.3 * torch.randn(3000, generator=g)).view(-1, 1)  # overlapping classes
    names = ["accuracy", "roc_auc", "pr_auc", "ece"]
    acc = MetricAccumulator(_spec("binary", ["no", "yes"]), names, torch.device("cpu"))
    got = _feed(acc, out, y, chunks=7)
    scores = out.view(-1).numpy()
    # binned: exact up to scores sharing one of 4,096 bins (documented in metrics.py)
    assert got["roc_auc"] == pytest.approx(sk.roc_auc_score(y, scores), abs=1e-3)
    assert got["pr_auc"] == pytest.approx(sk.average_precision_score(y, scores), abs=2e-3)
    p = torch.sigmoid(out.view(-1))
    confidence = torch.maximum(p, 1 - p).numpy()
    correct = ((scores > 0) == (y.numpy() > 0.5)).astype(int)
    assert got["ece"] == pytest.approx(_ece_reference(confidence, correct, 15), abs=1e-6)
    curve = acc.details()["roc_curve"]
    assert curve["fpr"][0] == 0 and curve["tpr"][-1] == pytest.approx(1.0)


def test_binned_auc_is_exact_when_scores_are_distinct_bins():
    # scores on a coarse grid (many ties, each grid value its own bin): sklearn's tie handling
    g = torch.Generator().manual_seed(5)
    y = (torch.rand(500, generator=g) < 0.5).float()
    out = (torch.randint(-8, 9, (500,), generator=g).float() + 2 * y).view(-1, 1)
    got = _feed(MetricAccumulator(_spec("binary", ["n", "y"]), ["roc_auc", "pr_auc"], torch.device("cpu")), out, y)
    assert got["roc_auc"] == pytest.approx(sk.roc_auc_score(y, out.view(-1)), abs=1e-12)
    assert got["pr_auc"] == pytest.approx(sk.average_precision_score(y, out.view(-1)), abs=1e-12)


def test_auc_is_for_two_classes_always_and_nan_without_both_classes():
    from torchkeel.evaluate.metrics import metrics_for

    ten = _spec("classification", list("0123456789"))
    assert metrics_for(ten, ["accuracy", "roc_auc", "ece", "mse"]) == ["accuracy", "ece"]
    # two classes, either head: ROC-AUC and PR-AUC without asking
    assert metrics_for(_spec("classification", ["no", "yes"]), ["accuracy"]) == ["accuracy", "roc_auc", "pr_auc"]
    assert metrics_for(_spec("binary", ["n", "y"]), ["roc_auc", "r2"]) == ["roc_auc", "pr_auc"]
    assert metrics_for(_spec("regression", None), ["accuracy", "r2"]) == ["r2"]
    acc = MetricAccumulator(_spec("binary", ["n", "y"]), ["roc_auc"], torch.device("cpu"))
    got = _feed(acc, torch.randn(10, 1), torch.ones(10), 1)
    assert np.isnan(got["roc_auc"])


def test_two_logit_classification_gets_the_binary_aucs():
    """A target column with two values trains a two-logit softmax head; its ROC-AUC and PR-AUC
    come from z1 - z0 (monotone in p1) and match scikit-learn's on p1."""
    sk = pytest.importorskip("sklearn.metrics")
    g = torch.Generator().manual_seed(3)
    y = torch.randint(0, 2, (400,), generator=g)
    out = torch.randn(400, 2, generator=g) + y[:, None] * torch.tensor([0.0, 1.0])
    got = _feed(MetricAccumulator(_spec("classification", ["no", "yes"]), ["accuracy"], torch.device("cpu")), out, y)
    p1 = torch.softmax(out, 1)[:, 1]
    assert got["roc_auc"] == pytest.approx(sk.roc_auc_score(y, p1), abs=1e-3)
    assert got["pr_auc"] == pytest.approx(sk.average_precision_score(y, p1), abs=1e-3)
