"""keel train --auto's ensemble: Caruana's greedy selection on val probabilities, text members
that tokenise each their own way side by side in one row, and the ensemble's run folder used
as any run's (eval, predict, export)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import httpx
import pandas as pd
import pytest
import torch
from conftest import keel
from rich.console import Console
from serving import running_server

from torchkeel.auto_ensemble import VAL_FILE, build_ensemble, cross_fitted, greedy_counts
from torchkeel.config import load_config
from torchkeel.data.tokenize import ConcatTokenizer, WordTokenizer, tokenizer_from_dict
from torchkeel.experiment import evaluate_run, load_model, load_run_config, prepare_data, train


def test_greedy_selection_mixes_models_that_err_apart_and_keeps_one_that_dominates():
    y = torch.tensor([0, 1, 0, 1])
    sure, unsure = torch.tensor([0.9, 0.1]), torch.tensor([0.4, 0.6])
    # a is right and sure on the first two rows, wrong on the last two; b the other way round
    a = torch.stack([sure, sure.flip(0), unsure.flip(0), unsure]).double()
    b = torch.stack([unsure.flip(0), unsure, sure, sure.flip(0)]).double()
    counts = greedy_counts([a, b], y, rounds=10)
    assert counts == [5, 5]  # the mean is right on every row
    perfect = torch.tensor([[0.95, 0.05], [0.05, 0.95], [0.95, 0.05], [0.05, 0.95]]).double()
    assert greedy_counts([a, perfect], y, rounds=10) == [0, 10]


def test_cross_fitted_val_scores_each_half_with_the_weights_chosen_on_the_other():
    """a is right on the even rows only, b on the odd ones: on all rows their mean is right
    everywhere, but weights chosen on the odd rows (all on b) are wrong on the even rows and
    the other way round, so the out-of-fold estimate sees what the in-sample one hides."""
    y = torch.tensor([0, 1, 0, 1, 0, 1])
    right, wrong = torch.tensor([0.9, 0.1]), torch.tensor([0.7, 0.3])  # for class 0; flipped for 1
    a = torch.stack([right, wrong] * 3).double()
    b = torch.stack([wrong.flip(0), right.flip(0)] * 3).double()
    assert 0 < greedy_counts([a, b], y)[0] < 20  # in-sample: a mix of the two
    out = cross_fitted([a, b], y)
    torch.testing.assert_close(out[0::2], b[0::2])  # the even rows: the weights the odd rows chose
    torch.testing.assert_close(out[1::2], a[1::2])
    assert (out.argmax(1) == y).sum() == 0
    dominant = cross_fitted([a, torch.eye(2, dtype=torch.float64)[y] * 0.9 + 0.05], y)
    assert (dominant.argmax(1) == y).all()  # a model right on every row is chosen on either half


def test_concat_tokenizer_puts_each_part_in_its_own_columns():
    words = WordTokenizer.train(["the cat sat", "a dog ran far away"], vocab_size=20)
    concat = ConcatTokenizer([(words, 2), (words, 5)])
    ids = concat.encode_batch(["the cat sat", "dog"])
    first = words.encode_batch(["the cat sat"])[0]
    assert ids[0] == first[:2] + first + [0, 0] and len(ids[1]) == 7 and ids[1][1] == 0
    again = tokenizer_from_dict(json.loads(json.dumps(concat.to_dict())))
    assert again.encode_batch(["the cat sat", "dog"]) == ids and again.width == 7


def topic_csv(path: Path, rows: int = 400, seed: int = 0) -> Path:
    rng = random.Random(seed)
    filler = [f"w{i}" for i in range(60)]
    topics = {"sport": ["goal", "match", "team"], "money": ["bank", "price", "stock"]}
    records = []
    for _ in range(rows):
        label = rng.choice(list(topics))
        words = [rng.choice(filler) for _ in range(rng.randint(5, 25))] + rng.sample(topics[label], 2)
        rng.shuffle(words)
        records.append({"text": " ".join(words), "label": label})
    pd.DataFrame(records).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ensemble")
    csv = topic_csv(folder / "topics.csv")
    common = [f"data.path={csv}", "data.val_fraction=0.2", "train.threads=1", "train.epochs=3", "eval.report=false"]
    entries = []
    for recipe, sets in {
        "linear_bow": ["model.name=linear_bow", "data.text.ngrams=2", "data.text.ngram_buckets=512"],
        "embedding_bag": ["model.name=embedding_bag", "data.text.ngrams=1"],  # another tokenisation
    }.items():
        cfg = load_config(None, [*common, *sets, f"out_dir={folder / 'runs'}"], {"data.name": "text_csv"})
        cfg.name = f"topics-auto-{recipe}"
        run_dir = train(cfg, Console(quiet=True), progress=False, test=False)
        assert (run_dir / VAL_FILE).is_file()  # saved for the ensemble
        entries.append({"recipe": recipe, "run": str(run_dir), "val": 0.0})
    return folder, entries


def test_an_ensemble_chosen_on_val_is_ranked_by_its_cross_fitted_val(members, monkeypatch):
    """The weights on all val rows are [1, 1]; on either half (patched) [1, 0]: so every val row
    is scored by the first member alone, and the entry's val is that member's val accuracy."""
    import safetensors.torch

    from torchkeel import auto_ensemble

    folder, entries = members
    monkeypatch.chdir(folder)
    saved = [safetensors.torch.load_file(str(Path(e["run"]) / VAL_FILE)) for e in entries]
    n = len(saved[0]["y"])
    monkeypatch.setattr(auto_ensemble, "greedy_counts", lambda probs, y: [1, 1] if len(y) == n else [1, 0])
    entry = build_ensemble(entries, "topics-cf", "accuracy")
    assert entry is not None and entry["members"] == {"linear_bow": 0.5, "embedding_bag": 0.5}
    first = (saved[0]["probabilities"].argmax(1) == saved[0]["y"]).double().mean().item()
    assert entry["val"] == pytest.approx(first)
    summary = json.loads((Path(entry["run"]) / "summary.json").read_text())
    assert summary["val_cross_fitted"] is True
    mean = (saved[0]["probabilities"] + saved[1]["probabilities"]) / 2  # the saved model: all val rows' weights
    in_sample = (mean.argmax(1) == saved[0]["y"]).double().mean().item()
    assert evaluate_run(Path(entry["run"]), "val")["accuracy"] == pytest.approx(in_sample)


def test_an_ensemble_run_is_the_mean_of_its_members_and_works_as_any_run(members, monkeypatch):
    folder, entries = members
    monkeypatch.chdir(folder)
    entry = build_ensemble(entries, "topics", "accuracy", counts=[3, 1])
    assert entry is not None and entry["members"] == {"linear_bow": 0.75, "embedding_bag": 0.25}
    run_dir = Path(entry["run"])
    model, spec, _ = load_model(run_dir)
    assert spec.extra["tokenizer"]["type"] == "concat" and len(spec.extra["widths"]) == 2
    data = prepare_data(load_run_config(run_dir), spec)
    expected = torch.zeros(len(data.test), 2)
    for e, w in zip(entries, (0.75, 0.25), strict=True):  # each member on its own ids of the same texts
        member, member_spec, _ = load_model(Path(e["run"]))
        own = prepare_data(load_run_config(Path(e["run"])), member_spec)
        assert torch.equal(own.test.y, data.test.y)
        with torch.no_grad():
            expected += w * member(own.test.x).softmax(1)
    with torch.no_grad():
        got = model(data.test.x).softmax(1)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert evaluate_run(run_dir, "val")["accuracy"] == pytest.approx(entry["val"])  # the val it was ranked by
    texts = ["goal w1 team w7 match", "w3 bank w9 price stock w2"]
    proc = keel("predict", str(run_dir), "--json", *sum((["--text", t] for t in texts), []), cwd=folder)
    assert proc.returncode == 0, proc.stderr
    predicted = [json.loads(line)["top"][0] for line in proc.stdout.splitlines() if line.strip()]
    assert [p["class"] for p in predicted] == ["sport", "money"]
    with running_server(run_dir, log_dir=folder) as url:  # the server reads the rows as predict does
        served = httpx.post(f"{url}/predict", json={"texts": texts}, timeout=30).json()["predictions"]
    for got, want in zip(served, predicted, strict=True):
        assert got["top"][0]["class"] == want["class"]
        assert got["top"][0]["probability"] == pytest.approx(want["probability"], abs=1e-5)
    proc = keel("report", str(run_dir), cwd=folder)
    assert proc.returncode == 0 and "failed" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert (run_dir / "report.html").is_file()
    proc = keel("export", str(run_dir), cwd=folder, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert (run_dir / "export" / "model.onnx").is_file()


def test_members_of_other_classes_are_not_combined(members, tmp_path: Path, monkeypatch):
    folder, entries = members
    monkeypatch.chdir(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    for name in ("config.yaml", "model.json", "model.safetensors", VAL_FILE, "summary.json"):
        (other / name).write_bytes((Path(entries[1]["run"]) / name).read_bytes())
    meta = json.loads((other / "model.json").read_text())
    meta["spec"]["classes"] = ["money", "weather"]
    (other / "model.json").write_text(json.dumps(meta))
    assert build_ensemble([entries[0], {**entries[1], "run": str(other)}], "topics", "accuracy", counts=[1, 1]) is None


def test_the_report_reads_an_ensembles_first_member_words():
    from torchkeel.data.bundle import DataSpec
    from torchkeel.data.tokenize import NgramTokenizer
    from torchkeel.evaluate.sections import vocabulary

    words = WordTokenizer.train(["the cat sat"], vocab_size=10)
    concat = ConcatTokenizer([(NgramTokenizer(words, 2, 16), 6), (words, 3)])
    spec = DataSpec(name="t", kind="text", task="classification", input_shape=(9,), classes=["a", "b"])
    spec.extra.update(tokenizer=concat.to_dict(), widths=[6, 3])
    assert vocabulary(spec) == words.vocab


def test_one_logit_targets_and_ties_that_go_to_the_single_recipe():
    from torchkeel.auto import rank

    y = torch.tensor([0.0, 1.0, 1.0])  # bce: float targets
    p = torch.tensor([[0.8, 0.2], [0.3, 0.7], [0.4, 0.6]]).double()
    assert greedy_counts([p, p.flip(1)], y, rounds=4) == [4, 0]
    entries = [{"recipe": "a", "val": 0.9, "val_loss": 0.5}, {"recipe": "ensemble", "val": 0.9, "val_loss": 0.1,
                                                                "members": {"a": 0.5, "b": 0.5}}]  # fmt: skip
    assert rank(entries, lower=False)[0]["recipe"] == "a"


def test_rows_keep_every_members_ids_when_their_longest_texts_differ(tmp_path: Path):
    from torchkeel.config_data import DataConfig
    from torchkeel.data.text import text_bundle

    frame = pd.DataFrame({"text": ["abcdefgh", "a b c"] * 10, "label": ["x", "y"] * 10})
    words = WordTokenizer.train(frame["text"], vocab_size=50)
    letters = WordTokenizer(WordTokenizer.train(list("abcdefgh"), vocab_size=50).vocab, pattern=r"\w")
    concat = ConcatTokenizer([(words, 3), (letters, 8)])  # the longest in words is not the longest in letters
    bundle = text_bundle("t", frame, DataConfig(name="text_csv", path="t.csv"), 0, tokenizer=concat)
    assert bundle.spec.input_shape == (11,) and bundle.train.x.shape[1] == 11
    row = bundle.train.x[(bundle.train.y == 0).nonzero()[0, 0]]  # "abcdefgh": 1 word, 8 letters
    assert int((row[3:] != 0).sum()) == 8


def test_a_failing_ensemble_leaves_the_search_to_finish_with_the_single_recipes(tmp_path: Path, monkeypatch):
    import io

    from torchkeel import auto
    from torchkeel.errors import RunError

    def broken(*args, **kwargs):
        raise RunError("a member's folder is damaged")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(auto, "build_ensemble", broken)
    raw = {"data": {"name": "iris"}, "train": {"threads": 1, "epochs": 3}, "eval": {"report": False}}
    out = io.StringIO()
    result = auto.run_auto(raw, "15s", Console(file=out, width=120))
    assert result.winner is not None and result.winner["recipe"] != "ensemble" and result.test is not None
    failed = [e for e in result.leaderboard if e["recipe"] == "ensemble"]
    assert failed and failed[0]["state"] == "failed" and "damaged" in out.getvalue()
