"""`keel data`, and `keel train` -> `keel predict` / `keel eval` end to end once per kind of
data (image folder, CSV classification, CSV regression, text) through the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import assert_one_line_error, keel
from make_data import news_rows, shop_rows, write_image_folder, write_rows
from PIL import Image


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli-data")
    write_image_folder(root / "images", per_class=12, size=(16, 16))
    (root / "images" / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    write_rows(root / "shop.csv", shop_rows(300))
    write_rows(root / "news.csv", news_rows(300))
    return root


def _train(cwd: Path, *args: str) -> Path:
    keel("train", "-q", "--seed", "0", *args, cwd=cwd, check=True)
    return (cwd / "runs" / "latest").resolve()


def test_keel_data_on_an_image_folder_writes_a_grid(files: Path, tmp_path: Path):
    proc = keel("data", "image_folder", "--set", f"data.root={files / 'images'}", "--grid", "grid.png", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for text in ("image classification", "blue", "green", "red", "normalisation (train split, per channel)"):
        assert text in proc.stdout, text
    assert "warning: image_folder: skipped 1 of 37 files" in proc.stderr
    assert "--grid" in keel("data", "--help", cwd=tmp_path, check=True).stdout
    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.format == "PNG" and grid.width > 300


def test_keel_data_json_for_tables_and_text(files: Path, tmp_path: Path):
    iris = json.loads(keel("data", "iris", "--json", cwd=tmp_path, check=True).stdout)
    assert iris["sizes"] == {"train": 105, "val": 15, "test": 30} and iris["kind"] == "table"
    assert [c["train"] for c in iris["classes"]] == [35, 35, 35] and len(iris["numeric"]) == 4
    text = keel("data", "text_csv", "--set", f"data.path={files / 'news.csv'}", cwd=tmp_path, check=True).stdout
    assert "vocabulary" in text and "word + hashed 2-grams tokeniser from the train split" in text and "sport" in text
    config = tmp_path / "shop.yaml"
    config.write_text(
        f"data: {{name: csv, path: {files / 'shop.csv'}, target: price, table: {{exclude: [id, buys]}}}}\n"
    )
    shop = json.loads(keel("data", str(config), "--json", cwd=tmp_path, check=True).stdout)
    assert shop["task"] == "regression" and 5 < shop["target"]["mean"] < 15 and shop["categorical"][0]["name"] == "city"


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["data", "csv", "--set", "data.path=rows.csv", "--set", "data.target=lable"], ["did you mean 'label'"]),
        (["data", "mnist", "--set", "data.root=nowhere"], ["files not found", "MNIST/raw"]),
        (["data", "csv"], ["set data.path"]),
    ],
)
def test_keel_data_bad_input_is_one_line(tmp_path: Path, args: list[str], fragments: list[str]):
    (tmp_path / "rows.csv").write_text("a,label\n1,x\n2,y\n")
    assert_one_line_error(keel(*args, cwd=tmp_path), *fragments)


@pytest.fixture(scope="module")
def image_run(files: Path, tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("image-run")
    augment = "data.augment={crop: 2, rotate: 10, translate: 0.1, scale: 0.1, cutout: 4}"
    return _train(
        cwd, "--data", "image_folder", "--set", f"data.root={files / 'images'}", "--set", augment, "--epochs", "4"
    )


def test_image_folder_trains_and_predicts(image_run: Path, files: Path):
    summary = json.loads((image_run / "summary.json").read_text())
    assert summary["test"]["accuracy"] >= 0.8  # the classes are three colour tints
    picture = files / "images" / "green" / "0.png"
    result = json.loads(keel("predict", str(image_run), str(picture), "--json", cwd=image_run, check=True).stdout)
    assert result["top"][0]["class"] == "green"
    config = (image_run / "config.yaml").read_text()
    assert "cutout: 4" in config and (image_run / "data.json").is_file()


@pytest.fixture(scope="module")
def table_runs(files: Path, tmp_path_factory) -> dict[str, Path]:
    cwd = tmp_path_factory.mktemp("table-runs")
    shop = f"data.path={files / 'shop.csv'}"
    runs = {}
    runs["classification"] = _train(
        cwd, "--data", "csv", "--model", "mlp", "--set", shop, "--set", "data.target=buys",
        "--set", "data.table.exclude=[id, price]", "--set", "data.class_weights=true", "--epochs", "15",
    )  # fmt: skip
    runs["regression"] = _train(
        cwd, "--data", "csv", "--model", "mlp", "--set", shop, "--set", "data.target=price",
        "--set", "data.table.exclude=[id, buys]", "--set", "eval.metrics=[mse, r2]", "--epochs", "30",
    )  # fmt: skip
    return runs


def test_csv_classification_trains_and_predicts_rows(table_runs: dict[str, Path], tmp_path: Path):
    run = table_runs["classification"]
    assert json.loads((run / "summary.json").read_text())["test"]["accuracy"] >= 0.75
    spec = json.loads((run / "model.json").read_text())["spec"]
    assert len(spec["extra"]["class_weights"]) == 2
    rows = shop_rows(40, seed=5)
    new = write_rows(tmp_path / "rows.csv", [{k: r[k] for k in ("age", "income", "city")} for r in rows])
    proc = keel("predict", str(run), str(new), cwd=tmp_path, check=True)
    assert "wrote 40 predictions" in proc.stdout
    with (tmp_path / "rows.predictions.csv").open() as f:
        written = list(csv.DictReader(f))
    assert len(written) == 40 and set(written[0]) == {"age", "income", "city", "predicted_buys", "probability"}
    correct = sum(w["predicted_buys"] == r["buys"] for w, r in zip(written, rows, strict=True))
    assert correct >= 28


def test_csv_regression_predicts_in_the_targets_units(table_runs: dict[str, Path], tmp_path: Path):
    run = table_runs["regression"]
    assert json.loads((run / "summary.json").read_text())["test"]["r2"] > 0.8
    rows = shop_rows(30, seed=6)
    new = write_rows(tmp_path / "more.csv", rows)  # extra columns (the target too) are ignored
    proc = keel("predict", str(run), str(new), "--output", "out.csv", "--json", cwd=tmp_path, check=True)
    values = [json.loads(line)["value"][0] for line in proc.stdout.splitlines()]
    errors = [abs(v - r["price"]) for v, r in zip(values, rows, strict=True)]
    assert sum(errors) / len(errors) < 1.0  # prices are 5-15; standardised outputs would be near 0
    missing = write_rows(tmp_path / "missing.csv", [{"age": 30, "incom": 50.0, "city": "paris"}])
    assert_one_line_error(
        keel("predict", str(run), str(missing), cwd=tmp_path), "no column 'income'", "did you mean 'incom'"
    )


@pytest.fixture(scope="module")
def text_run(files: Path, tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("text-run")
    return _train(
        cwd, "--data", "text_csv", "--model", "embedding_bag", "--set", f"data.path={files / 'news.csv'}",
        "--set", "data.text.tokenizer=wordpiece", "--set", "data.text.vocab_size=120", "--epochs", "8",
        "--set", "train.optimizer.lr=0.02",
    )  # fmt: skip


def test_text_trains_predicts_and_evaluates(text_run: Path, tmp_path: Path):
    summary = json.loads((text_run / "summary.json").read_text())
    assert summary["test"]["accuracy"] >= 0.8
    proc = keel(
        "predict", str(text_run), "--text", "the coach and the team won the league", "--json", cwd=tmp_path, check=True
    )
    assert json.loads(proc.stdout)["top"][0]["class"] == "sport"
    lines = tmp_path / "texts.txt"
    lines.write_text("bake bread with cheese and spice\n\nnew phone app and cloud software\n")
    results = [
        json.loads(line)
        for line in keel("predict", str(text_run), str(lines), "--json", cwd=tmp_path, check=True).stdout.splitlines()
    ]
    assert [r["source"] for r in results] == [f"{lines}:1", f"{lines}:3"]
    assert [r["top"][0]["class"] for r in results] == ["food", "tech"]
    # re-evaluation rebuilds the split but tokenises with the run's own (stored) WordPiece vocabulary
    again = json.loads(keel("eval", str(text_run), "--json", cwd=tmp_path, check=True).stdout)
    assert again["accuracy"] == pytest.approx(summary["test"]["accuracy"])
    assert_one_line_error(keel("predict", str(text_run), cwd=tmp_path), "--text")
