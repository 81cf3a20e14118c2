"""linear_bow: tf-idf weighted ids into one linear layer. Its features are scikit-learn's
TfidfVectorizer(sublinear_tf=True) feature for feature; trained by the loop it is as accurate
as scikit-learn's LogisticRegression on those features; its idf is fitted once."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

import torchkeel as tk
from torchkeel.errors import ConfigError
from torchkeel.models import build
from torchkeel.models.layers import fit_to_data
from torchkeel.models.text import trim_padding


def negation_set(path, rows: int = 2400, seed: int = 0):
    """Sentiment that bigrams decide: "good"/"bad" phrases, each maybe negated ("not good"),
    among random filler words; the label is the sign of their sum, 5% of labels flipped."""
    rng = random.Random(seed)
    filler = [f"w{i}" for i in range(300)]
    records = []
    for _ in range(rows):
        words = [rng.choice(filler) for _ in range(rng.randint(15, 60))]
        score = 0
        for _ in range(rng.randint(1, 3)):
            word, negated = rng.choice(["good", "bad"]), rng.random() < 0.5
            words.insert(rng.randrange(len(words)), ("not " if negated else "") + word)
            score += (1 if word == "good" else -1) * (-1 if negated else 1)
        label = "pos" if score > 0 else "neg" if score < 0 else rng.choice(["pos", "neg"])
        if rng.random() < 0.05:
            label = "pos" if label == "neg" else "neg"
        records.append({"text": " ".join(words), "label": label})
    pd.DataFrame(records).to_csv(path, index=False)
    return tk.data.load({"name": "text_csv", "path": str(path), "text": {"ngrams": 2, "ngram_buckets": 4096}})


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return negation_set(tmp_path_factory.mktemp("linear_bow") / "negation.csv")


def test_features_are_scikit_learns_tfidf(data):
    model = build("linear_bow", data.spec)
    fit_to_data(model, data.train)
    assert bool(model.fitted)
    pad = data.spec.extra["pad_index"]
    docs = [[str(i) for i in row.tolist() if i != pad] for row in data.train.x]
    vectorizer = TfidfVectorizer(analyzer=lambda doc: doc, sublinear_tf=True)
    reference = vectorizer.fit_transform(docs).toarray()
    ids = np.array([int(term) for term in vectorizer.get_feature_names_out()])
    ours = model.features(data.train.x).numpy()
    np.testing.assert_allclose(ours[:, ids], reference, rtol=1e-5, atol=1e-6)
    assert not ours[:, np.setdiff1d(np.arange(ours.shape[1]), ids)].any()  # nothing anywhere else
    np.testing.assert_allclose(model.weights(data.train.x).sum(1).numpy(), ours.sum(1), rtol=1e-5)


def test_trained_by_the_loop_it_matches_logistic_regression(data):
    torch.manual_seed(0)
    model = build("linear_bow", data.spec)
    run = tk.fit(model, data, epochs=20, batch_size=32, optimizer="sgd", lr=1.0, momentum=0.9, weight_decay=1e-4,
                 schedule="cosine", progress=False)  # fmt: skip
    ours = run.evaluate("test")["accuracy"]
    features = lambda split: model.features(split.x).numpy()  # noqa: E731
    reference = LogisticRegression(C=1.0, max_iter=2000).fit(features(data.train), data.train.y.numpy())
    theirs = float((reference.predict(features(data.test)) == data.test.y.numpy()).mean())
    assert theirs > 0.65  # well above chance: the bigrams carry the label
    assert abs(ours - theirs) <= 0.01, (ours, theirs)


def test_a_loaded_model_keeps_its_idf_and_other_data_is_refused(data):
    model = build("linear_bow", data.spec)
    fit_to_data(model, data.train)
    again = build("linear_bow", data.spec)
    again.load_state_dict(model.state_dict())
    fit_to_data(again, tk.data.bundle.Split(data.train.x[:5], data.train.y[:5]))  # fitted: not refitted
    assert torch.equal(again.idf, model.idf)
    digits = tk.data.load({"name": "digits"})
    with pytest.raises(ConfigError, match="model 'linear_bow' takes text"):
        build("linear_bow", digits.spec)


def test_batches_are_cut_after_their_last_used_column_only():
    """Rows are right-padded to the data's longest text; a bag model trims each batch, and an
    id after a pad (a dropped word, ids given by hand) is never cut off."""
    x = torch.tensor([[5, 0, 7, 0, 0, 0], [1, 2, 0, 0, 0, 0]])
    assert trim_padding(x, 0).tolist() == [[5, 0, 7], [1, 2, 0]]
    assert trim_padding(torch.zeros(2, 4, dtype=torch.long), 0).shape == (2, 1)  # empty texts: one pad
    model = build("linear_bow", tk.data.bundle.DataSpec("t", "text", "classification", (6,), classes=["a", "b"],
                                                        extra={"vocab_size": 10, "pad_index": 0}))  # fmt: skip
    fit_to_data(model, tk.data.bundle.Split(x, torch.tensor([0, 1])))
    torch.testing.assert_close(model(x), model(trim_padding(x, 0)))
