"""Nothing of the user's is lost or overwritten: `keel predict` never writes over its input,
refuses an existing output without --force, and writes the user's cells back exactly as they
were in the file; `keel sample` and `keel export` refuse existing files the same way."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import assert_one_line_error, keel
from rich.console import Console

from torchkeel.config import validate_config
from torchkeel.errors import ExportError, WriteError
from torchkeel.experiment import train
from torchkeel.export import export_run
from torchkeel.serve.predictor import Predictor

# leading zeros, a negative integer, empty cells, quotes and commas inside a cell, non-ASCII,
# padding spaces, a number written with a trailing zero, and a column the model never saw
ROWS = (
    "code,x,city,note\n"
    '007,-1,Zürich,"says ""hi"", twice"\n'
    "010,,São Paulo,\n"
    "  3 ,2.50,,NA\n"
    '0x1F,1e3,"naïve, café",日本語\n'
)


@pytest.fixture(scope="module")
def table_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("outputs")
    lines = ["code,x,city,label"] + [
        f"{i:03d},{i % 7 - 3},{['Zürich', 'São Paulo', ''][i % 3]},{'yes' if i % 7 > 3 else 'no'}" for i in range(60)
    ]
    (root / "train.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    raw = {
        "data": {"name": "csv", "path": str(root / "train.csv"), "target": "label", "table": {"exclude": ["code"]}},
        "model": {"name": "mlp", "hidden": [8]},
        "train": {"epochs": 1, "batch_size": 16},
        "eval": {"report": False},
        "out_dir": str(root / "runs"),
    }
    return train(validate_config(raw), Console(quiet=True), progress=False)


def _rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def test_predictions_keep_every_cell_as_written(table_run: Path, tmp_path: Path):
    rows = tmp_path / "rows.csv"
    rows.write_text(ROWS, encoding="utf-8")
    proc = keel("predict", str(table_run), str(rows), cwd=tmp_path, check=True)
    assert "wrote 4 predictions" in proc.stdout
    written = (tmp_path / "rows.predictions.csv").read_text(encoding="utf-8")
    assert rows.read_text(encoding="utf-8") == ROWS  # the input is untouched
    got, given = _rows(written), _rows(ROWS)
    assert got[0] == [*given[0], "predicted_label", "probability"]
    assert [r[:4] for r in got] == given  # 007, -1, the empty cells, '  3 ', 2.50, 1e3, NA: all verbatim
    assert {r[4] for r in got[1:]} <= {"yes", "no"} and all(0.5 <= float(r[5]) <= 1 for r in got[1:])
    assert written.startswith("code,x,city,note,predicted_label,probability\n007,-1,Zürich,")


def test_json_lines_and_tsv_values_come_back_as_written(table_run: Path, tmp_path: Path):
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text(
        '{"code": "007", "x": -1, "city": "Zürich"}\n\n{"code": 10, "x": 2.50, "city": null, "flag": true}\n',
        encoding="utf-8",
    )
    written, results = Predictor.from_run(table_run).predict_table(jsonl)
    got = _rows(written.read_text(encoding="utf-8"))
    assert len(results) == 2
    assert got[0][:4] == ["code", "x", "city", "flag"]
    assert got[1][:4] == ["007", "-1", "Zürich", ""] and got[2][:4] == ["10", "2.50", "", "true"]
    tsv = tmp_path / "other.tsv"
    tsv.write_text('code\tx\tcity\n007\t-1\t"a, b"\n', encoding="utf-8")
    written, _ = Predictor.from_run(table_run).predict_table(tsv)
    assert _rows(written.read_text(encoding="utf-8"))[1][:3] == ["007", "-1", "a, b"]


def test_a_users_column_named_like_a_prediction_is_kept(table_run: Path, tmp_path: Path):
    rows = tmp_path / "rows.csv"
    rows.write_text("x,city,probability\n1,Zürich,mine\n", encoding="utf-8")
    written, _ = Predictor.from_run(table_run).predict_table(rows)
    got = _rows(written.read_text(encoding="utf-8"))
    assert got[0] == ["x", "city", "probability", "predicted_label", "probability_2"]
    assert got[1][:3] == ["1", "Zürich", "mine"]


def test_predict_never_writes_over_its_input(table_run: Path, tmp_path: Path):
    rows = tmp_path / "rows.csv"
    rows.write_text(ROWS, encoding="utf-8")
    (tmp_path / "link.csv").symlink_to(rows)
    os.link(rows, tmp_path / "hard.csv")
    for target, force in (("rows.csv", []), ("link.csv", ["--force"])):  # --force never replaces an input
        proc = keel("predict", str(table_run), "rows.csv", "--output", target, *force, cwd=tmp_path)
        assert_one_line_error(proc, f"--output {target} is an input")
    predictor = Predictor.from_run(table_run)
    for target in ("rows.csv", "./rows.csv", "link.csv", "hard.csv", str(rows.resolve())):
        with pytest.raises(WriteError, match="is an input"):
            predictor.predict_table(rows, tmp_path / target, force=True)
    assert rows.read_text(encoding="utf-8") == ROWS
    # two inputs whose default outputs would be each other's input, or the same file
    (tmp_path / "rows.predictions.csv").write_text(ROWS, encoding="utf-8")
    proc = keel("predict", str(table_run), "rows.csv", "rows.predictions.csv", "--force", cwd=tmp_path)
    assert_one_line_error(proc, "rows.predictions.csv is an input")


def test_an_existing_output_needs_force(table_run: Path, tmp_path: Path):
    (tmp_path / "rows.csv").write_text(ROWS, encoding="utf-8")
    before = "my own notes\n"
    (tmp_path / "rows.predictions.csv").write_text(before, encoding="utf-8")
    proc = keel("predict", str(table_run), "rows.csv", cwd=tmp_path)
    assert_one_line_error(proc, "rows.predictions.csv already exists", "--force")
    assert (tmp_path / "rows.predictions.csv").read_text(encoding="utf-8") == before
    keel("predict", str(table_run), "rows.csv", "--force", cwd=tmp_path, check=True)
    assert _rows((tmp_path / "rows.predictions.csv").read_text(encoding="utf-8"))[0][-1] == "probability"
    assert not list(tmp_path.glob(".*.tmp"))  # written through a temporary file, renamed into place
    proc = keel("predict", str(table_run), "rows.csv", "--output", "nowhere/out.csv", cwd=tmp_path)
    assert_one_line_error(proc, "folder nowhere does not exist")
    (tmp_path / "folder.csv").mkdir()
    assert_one_line_error(keel("predict", str(table_run), "rows.csv", "-o", "folder.csv", cwd=tmp_path), "is a folder")


def test_export_replaces_an_earlier_export_only_with_force(trained_run: Path, tmp_path: Path):
    out = tmp_path / "deploy"
    first = export_run(trained_run, "torchscript", out)
    stamp = first.model_file.stat().st_mtime_ns
    with pytest.raises(WriteError, match="model.pt already exists.*--force"):
        export_run(trained_run, "torchscript", out)
    assert first.model_file.stat().st_mtime_ns == stamp
    export_run(trained_run, "exported-program", out)  # another format of the same run shares the folder
    export_run(trained_run, "torchscript", out, force=True)
    assert set(json.loads((out / "preprocess.json").read_text())["models"]) == {"model.pt", "model.pt2"}
    other = tmp_path / "other-run"
    shutil.copytree(trained_run, other, ignore=shutil.ignore_patterns("checkpoint", "export"))
    with pytest.raises(ExportError, match="holds the export of another run"):
        export_run(other, "onnx", out)
    export_run(other, "torchscript", out, force=True)  # replaces it: the old run's entries go
    doc = json.loads((out / "preprocess.json").read_text())
    assert doc["source_run"] == "other-run" and set(doc["models"]) == {"model.pt"}


@pytest.mark.parametrize(
    "command",
    [
        lambda run, tmp: ["lr-find", "--plot", str(tmp / "kept.png"), "--steps", "5"],
        lambda run, tmp: ["compare", str(run), str(run), "--plot", str(tmp / "kept.png")],
        lambda run, tmp: ["explain", str(run), str(tmp / "kept.png"), "--out", str(tmp)],
    ],
    ids=["lr-find", "compare", "explain"],
)
def test_plots_and_explanations_never_replace_a_file_without_force(command, trained_run, tmp_path):
    """lr-find --plot, compare --plot and explain --out refuse an existing file (or writing
    over their own input) before doing any work; the file is left as it was."""
    from PIL import Image

    kept = tmp_path / "kept.png"
    Image.new("L", (8, 8), 7).save(kept)
    (tmp_path / "kept.explain.png").write_bytes(kept.read_bytes())
    before = kept.read_bytes()
    proc = keel(*command(trained_run, tmp_path), cwd=tmp_path)
    assert_one_line_error(proc, "kept")
    assert kept.read_bytes() == before
