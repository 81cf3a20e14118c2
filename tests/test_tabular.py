"""Tables: CSV/TSV/JSONL/Parquet with missing values and categories, train-only statistics,
task inference, class weights, the embedded scikit-learn sets, and every bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from make_data import shop_rows, write_rows

from torchkeel.config import DataConfig, load_config
from torchkeel.data import load
from torchkeel.data.table_encoder import TableEncoder
from torchkeel.errors import ConfigError, DataError, DataWarning
from torchkeel.train.losses import build_loss


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> Path:
    return write_rows(tmp_path_factory.mktemp("tables") / "shop.csv", shop_rows())


def _cfg(path: Path, target: str = "buys", **kw) -> DataConfig:
    table = kw.pop("table", {})
    return DataConfig(name="csv", path=str(path), target=target, table={"exclude": ["id"], **table}, **kw)


def test_csv_classification_with_gaps_and_categories(shop: Path):
    data = load(_cfg(shop, table={"exclude": ["id", "price"]}), seed=0)
    spec = data.spec
    assert spec.kind == "table" and spec.task == "classification" and spec.classes == ["no", "yes"]
    encoder = TableEncoder.from_dict(spec.extra["table"]["encoder"])
    assert [c.name for c in encoder.numeric] == ["age", "income"]
    assert [c.name for c in encoder.categorical] == ["city"]
    assert set(encoder.categorical[0].categories) == {"paris", "lyon", "nice", "<missing>"}
    assert spec.input_shape == (2 + 4,) and spec.extra["table"]["features"][:2] == ["age", "income"]
    assert data.train.x.dtype == torch.float32 and not torch.isnan(data.train.x).any()
    assert data.train.y.dtype == torch.int64 and len(data.train) + len(data.val) + len(data.test) == 300
    # numbers standardised with train statistics; one-hot rows hold exactly one 1
    assert data.train.x[:, :2].mean(0).abs().max() < 0.1
    assert torch.equal(data.train.x[:, 2:].sum(1), torch.ones(len(data.train)))


@pytest.mark.parametrize("encoding", ["onehot", "index"])
def test_encoded_rows_read_back_as_the_users_columns_and_values(shop: Path, encoding: str):
    """What the report shows for a wrong prediction: the original values, not standardised numbers."""
    data = load(_cfg(shop, table={"exclude": ["id", "price"], "encoding": encoding}), seed=0)
    encoder = TableEncoder.from_dict(data.spec.extra["table"]["encoder"])
    frame = pd.read_csv(shop).dropna(subset=["age", "income"]).head(20)
    rows = encoder.inverse(encoder.transform(frame))
    assert list(rows[0]) == ["age", "income", "city"]
    for row, (_, raw) in zip(rows, frame.iterrows(), strict=True):
        assert float(row["age"]) == pytest.approx(raw["age"], rel=1e-5)
        assert float(row["income"]) == pytest.approx(raw["income"], rel=1e-5)
        assert row["city"] == (raw["city"] if isinstance(raw["city"], str) else "<missing>")


def test_statistics_come_from_train_and_predict_applies_them(shop: Path):
    data = load(_cfg(shop, table={"exclude": ["id", "price"]}), seed=0)
    encoder = TableEncoder.from_dict(data.spec.extra["table"]["encoder"])
    frame = pd.read_csv(shop)
    # recompute the train rows' statistics by hand: the encoder's numbers are exactly these
    train_ids = _rows_of(data.train.x, encoder.transform(frame))
    age = frame["age"].iloc[train_ids]
    assert encoder.numeric[0].mean == pytest.approx(age.mean()) and encoder.numeric[0].std == pytest.approx(age.std())
    assert encoder.numeric[0].fill == pytest.approx(age.median())
    assert frame["age"].mean() != pytest.approx(age.mean())  # all rows would give another number
    # the test split is the same encoding of its raw rows
    test_ids = _rows_of(data.test.x, encoder.transform(frame))
    torch.testing.assert_close(encoder.transform(frame.iloc[test_ids]), data.test.x)
    # the JSON round trip gives the same encoder; unseen categories encode as all zeros
    again = TableEncoder.from_dict(encoder.to_dict())
    new = pd.DataFrame({"age": [None, 30], "income": [50.0, None], "city": ["tokyo", "paris"]})
    x = again.transform(new)
    assert x[0, 2:].sum() == 0 and x[1, 2:].sum() == 1
    assert x[0, 0] == pytest.approx((encoder.numeric[0].fill - encoder.numeric[0].mean) / encoder.numeric[0].std)


def _rows_of(x: torch.Tensor, all_rows: torch.Tensor) -> list[int]:
    """Which rows of the whole encoded table the split's rows are."""
    return [int((all_rows - row).abs().sum(1).argmin()) for row in x]


def test_regression_target_is_standardised_and_index_encoding(shop: Path):
    data = load(_cfg(shop, target="price", table={"exclude": ["id", "buys"], "encoding": "index"}), seed=0)
    spec = data.spec
    assert spec.task == "regression" and spec.classes is None and data.train.y.shape == (len(data.train), 1)
    scale = spec.extra["target_scale"]
    assert abs(data.train.y.mean().item()) < 1e-5 and scale["std"] > 0
    prices = torch.tensor([r["price"] for r in shop_rows()])
    assert prices.mean().item() == pytest.approx(scale["mean"], rel=0.05)
    assert spec.input_shape == (3,) and spec.extra["numeric_features"] == 2
    assert spec.extra["categorical_cardinalities"] == [5]  # 4 categories + unseen
    city = data.train.x[:, 2]
    assert torch.equal(city, city.round()) and city.min() >= 1


def test_task_is_inferred_and_can_be_overridden(tmp_path: Path):
    rows = [{"x": i, "grade": i % 3, "score": i * 0.5} for i in range(60)]
    path = write_rows(tmp_path / "t.csv", rows)
    assert load(DataConfig(name="csv", path=str(path), target="grade"), seed=0).spec.task == "classification"
    assert load(DataConfig(name="csv", path=str(path), target="score"), seed=0).spec.task == "regression"
    forced = load(DataConfig(name="csv", path=str(path), target="grade", task="regression"), seed=0)
    assert forced.spec.task == "regression"


@pytest.mark.parametrize("suffix", ["tsv", "jsonl", "parquet"])
def test_other_formats_give_the_same_table(shop: Path, tmp_path: Path, suffix: str):
    path = tmp_path / f"shop.{suffix}"
    if suffix == "parquet":
        pd.read_csv(shop).to_parquet(path)
    else:
        write_rows(path, shop_rows())
    name = "parquet" if suffix == "parquet" else "csv"
    other = load(DataConfig(name=name, path=str(path), target="buys", table={"exclude": ["id", "price"]}), seed=0)
    reference = load(_cfg(shop, table={"exclude": ["id", "price"]}), seed=0)
    torch.testing.assert_close(other.train.x, reference.train.x)
    assert torch.equal(other.test.y, reference.test.y)


def test_own_test_file_is_kept(shop: Path, tmp_path: Path):
    test = write_rows(tmp_path / "test.csv", shop_rows(50, seed=7))
    data = load(_cfg(shop, test_path=str(test), table={"exclude": ["id", "price"]}), seed=0)
    assert len(data.test) == 50 and len(data.train) + len(data.val) == 300


def test_class_weights_reach_the_loss(tmp_path: Path):
    rows = [{"x": float(i), "y": "rare" if i % 10 == 0 else "common"} for i in range(200)]
    data = load(
        DataConfig(name="csv", path=str(write_rows(tmp_path / "imb.csv", rows)), target="y", class_weights=True)
    )
    counts = torch.bincount(data.train.y, minlength=2).double()
    expected = counts.sum() / (2 * counts)
    np.testing.assert_allclose(data.spec.extra["class_weights"], expected.numpy(), rtol=1e-5)
    weights = torch.tensor(data.spec.extra["class_weights"])
    out, y = torch.randn(8, 2), torch.tensor([0, 1, 1, 0, 1, 1, 1, 1])
    torch.testing.assert_close(
        build_loss("cross_entropy", 0.0, weights)(out, y), F.cross_entropy(out, y, weight=weights)
    )
    pos = weights[1:2] / weights[0]
    logits, targets = torch.randn(8), y.float()
    reference = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pos)
    torch.testing.assert_close(build_loss("bce", 0.0, weights)(logits[:, None], targets), reference)
    with pytest.raises(ConfigError, match="class_weights"):
        load(DataConfig(name="diabetes", class_weights=True))


@pytest.mark.parametrize(
    ("name", "task", "classes", "features"),
    [
        ("breast_cancer", "classification", ["benign", "malignant"], 30),
        ("wine", "classification", ["class_0", "class_1", "class_2"], 13),
        ("iris", "classification", ["setosa", "versicolor", "virginica"], 4),
        ("diabetes", "regression", None, 10),
    ],
)
def test_embedded_sets(name, task, classes, features):
    data = load(name)
    assert data.spec.task == task and data.spec.classes == classes and data.spec.input_shape == (features,)
    assert abs(data.train.x.mean().item()) < 1e-4


def _write(tmp_path: Path, name: str, content: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


@pytest.mark.parametrize(
    ("content", "overrides", "message"),
    [
        (b"", {}, "the file is empty"),
        (b"a,b,label\n", {}, "no data rows"),
        (b"a,b,label\n1,2,x\n3,4,x\n5,6,x\n", {}, r"single value \('x'\)"),
        (b"a,b,label\n1,2,x\n3,4,y\n", {"target": "lable"}, "no column 'lable'.*did you mean 'label'"),
        (b"a,b,label\n1,2,x\n3,4,y\n", {"table": {"exclude": ["bb"]}}, "data.table.exclude: no column 'bb'.*'b'"),
        (b"a,b,label\n1,2,x\n3,4,y\n", {"table": {"columns": ["a", "label"]}}, "is the target"),
        (b"a,b,label\n1,2,x\n3,4,y\n", {"task": "regression"}, "not numbers"),
        (b"a,b,label\n1,2,\n3,4,\n", {}, "has no values"),
    ],
)
def test_bad_tables_are_one_clear_error(tmp_path: Path, content: bytes, overrides: dict, message: str):
    path = _write(tmp_path, "bad.csv", content)
    cfg = {"name": "csv", "path": path, "target": "label", **overrides}
    with pytest.raises(DataError, match=message):
        load(DataConfig(**cfg), seed=0)


def test_missing_file_and_unknown_type(tmp_path: Path):
    with pytest.raises(DataError, match="no such file"):
        load(DataConfig(name="csv", path=str(tmp_path / "gone.csv"), target="y"))
    with pytest.raises(DataError, match="unknown file type '.xlsx'"):
        load(DataConfig(name="csv", path=_write(tmp_path, "a.xlsx", b"x"), target="y"))
    with pytest.raises(ConfigError, match="set data.path"):
        load_config(None, ["data.name=csv"])


def test_documented_fix_ups_warn(tmp_path: Path):
    lines = [f"{i},,{'?' if i % 20 == 0 else i},{'café' if i % 2 else 'bar'},{'xy'[i % 2]}" for i in range(40)]
    content = ("a,empty,num,note,label\n" + "\n".join(lines) + "\n").encode("latin-1")  # not UTF-8
    with pytest.warns(DataWarning) as caught:
        data = load(DataConfig(name="csv", path=_write(tmp_path, "odd.csv", content), target="label"), seed=0)
    messages = " | ".join(str(w.message) for w in caught)
    assert "not valid UTF-8; 20 undecodable" in messages and "dropped column(s) with no values: empty" in messages
    assert "column 'num' is numeric but for 2 value(s) like ['?']" in messages
    assert data.spec.extra["table"]["features"][:2] == ["a", "num"]
    assert "note=caf\ufffd" in data.spec.extra["table"]["features"]
