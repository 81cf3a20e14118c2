"""`keel serve` for text and table models: the same answers as `keel predict`, JSON 4xx for
bad bodies, and the web page's text box in headless Chromium."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from browser import chromium_page, skip_without_chromium
from conftest import keel
from serving import running_server


@pytest.fixture(scope="module")
def table_run(tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("table")
    keel(
        "train", "--data", "iris", "--model", "mlp", "--epochs", "20", "--set", "train.threads=1",
        "--set", "eval.report=false", "-q", cwd=cwd, check=True,
    )  # fmt: skip
    return (cwd / "runs" / "latest").resolve()


def test_text_model_served_like_keel_predict(text_run: Path, tmp_path: Path):
    texts = ["the goal of the team", "stock price at the bank"]
    cli = keel("predict", str(text_run), "--json", *sum((["--text", t] for t in texts), []), cwd=tmp_path)
    expected = [json.loads(line) for line in cli.stdout.splitlines() if line.strip()]
    with running_server(text_run, log_dir=tmp_path) as url:
        many = httpx.post(f"{url}/predict?top_k=2", json={"texts": texts}, timeout=30)
        assert many.status_code == 200, many.text
        got = many.json()["predictions"]
        assert [p["top"][0]["class"] for p in got] == ["sport", "money"]
        for g, e in zip(got, expected, strict=True):
            assert g["top"][0]["class"] == e["top"][0]["class"]
            assert g["top"][0]["probability"] == pytest.approx(e["top"][0]["probability"], abs=1e-5)
        plain = httpx.post(f"{url}/predict", content="goal team match", headers={"content-type": "text/plain"})
        assert plain.json()["predictions"][0]["top"][0]["class"] == "sport"
        for body, status, words in (
            ({"text": "   "}, 400, "empty text"),
            ({"texts": []}, 422, "non-empty"),
            ({"words": "x"}, 422, '"text"'),
            ({"texts": [1, 2]}, 422, "string"),
        ):
            bad = httpx.post(f"{url}/predict", json=body, timeout=30)
            assert bad.status_code == status and words in bad.json()["error"], (body, bad.text)
        wrong_type = httpx.post(f"{url}/predict", files={"file": ("a.png", b"x")}, timeout=30)
        assert wrong_type.status_code == 415
        _type_in_chromium(url, "the coach and the team", "sport")


def test_table_model_served_with_json_rows(table_run: Path, tmp_path: Path):
    from sklearn.datasets import load_iris

    frame = load_iris(as_frame=True).frame
    rows = frame.drop(columns="target").iloc[[0, 60, 120]]
    with running_server(table_run, log_dir=tmp_path) as url:
        info = httpx.get(f"{url}/info", timeout=30).json()
        assert info["columns"] == list(rows.columns)
        answer = httpx.post(f"{url}/predict", json={"rows": rows.to_dict(orient="records")}, timeout=30)
        assert answer.status_code == 200, answer.text
        from torchkeel.serve.predictor import Predictor

        expected = Predictor.from_run(table_run).predict_rows(rows)  # what `keel predict` answers
        got = answer.json()["predictions"]
        classes = [p["top"][0]["class"] for p in got]
        assert classes == [e.top[0][0] for e in expected] and len(set(classes)) == 3  # one of each species
        for g, e in zip(got, expected, strict=True):
            assert g["top"][0]["probability"] == pytest.approx(e.top[0][1], abs=1e-5)
        one = httpx.post(f"{url}/predict", json={"row": rows.iloc[0].to_dict()}, timeout=30)
        assert one.json()["predictions"][0]["top"][0]["class"] == classes[0]
        missing = httpx.post(f"{url}/predict", json={"row": {"sepal length (cm)": 5.0}}, timeout=30)
        assert missing.status_code == 400 and "no column 'sepal width (cm)'" in missing.json()["error"]
        assert httpx.post(f"{url}/predict", json={"rows": ["x"]}, timeout=30).status_code == 422
        assert httpx.get(f"{url}/health", timeout=30).json()["status"] == "ok"  # still serving


def _type_in_chromium(url: str, text: str, expected: str) -> None:
    skip_without_chromium()
    with chromium_page(url + "/") as (page, problems):
        page.wait_for_selector("#text-input:not([hidden])")
        page.fill("#text", text)
        page.click("#predict-text")
        page.wait_for_selector("#bars li")
        assert page.inner_text("#bars li .label") == expected
    assert problems == []


# TorchScript of images is in the default run (tests/test_export.py); of texts and tables under -m slow
@pytest.mark.parametrize("fmt", ["onnx", pytest.param("torchscript", marks=pytest.mark.slow)])
def test_text_and_table_models_export_verified(text_run: Path, table_run: Path, tmp_path: Path, fmt: str):
    for run in (text_run, table_run):
        out = tmp_path / f"{run.parent.parent.name}-{fmt}"
        # from the folder the run was trained in: its config's data path is relative to it
        proc = keel("export", str(run), "--format", fmt, "--out", str(out), cwd=run.parent.parent)
        assert proc.returncode == 0, proc.stderr
        assert "the test split" in proc.stdout, proc.stdout  # verified on real inputs, within the tolerance
        meta = json.loads((out / "preprocess.json").read_text())
        assert json.dumps(meta)  # the tokeniser / column encoder travel with the model
