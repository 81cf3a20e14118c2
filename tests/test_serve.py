"""`keel serve` as a real process: predictions equal `keel predict`'s, batching, /info,
/docs, bad requests answered with JSON 4xx while the server keeps serving, several workers."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from conftest import assert_one_line_error, keel
from serving import digit_png, running_server

from torchkeel.serve.predictor import Predictor


@pytest.fixture(scope="module")
def server(digits_server: str) -> str:
    return digits_server


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, int]]:
    folder = tmp_path_factory.mktemp("digits")
    return [digit_png(folder, i) for i in range(8)]


def test_predict_uploads_like_keel_predict(server: str, trained_run: Path, digits):
    files = [("file", (p.name, p.read_bytes(), "image/png")) for p, _ in digits[:4]]
    response = httpx.post(f"{server}/predict", params={"top_k": 10}, files=files, timeout=30)
    assert response.status_code == 200, response.text
    served = response.json()["predictions"]
    local = Predictor.from_run(trained_run, top_k=10).predict_images([p for p, _ in digits[:4]])
    assert [s["source"] for s in served] == [p.name for p, _ in digits[:4]]
    for s, expected in zip(served, local, strict=True):
        assert [t["class"] for t in s["top"]] == [c for c, _ in expected.top]
        assert [t["probability"] for t in s["top"]] == pytest.approx([p for _, p in expected.top], abs=1e-6)
    assert sum(s["top"][0]["class"] == str(label) for s, (_, label) in zip(served, digits, strict=False)) >= 3


def test_raw_image_body_and_default_top_k(server: str, digits):
    path, _ = digits[0]
    response = httpx.post(
        f"{server}/predict", content=path.read_bytes(), headers={"content-type": "image/png"}, timeout=30
    )
    assert response.status_code == 200, response.text
    top = response.json()["predictions"][0]["top"]
    assert len(top) == 3 and top == sorted(top, key=lambda t: -t["probability"])


def test_concurrent_requests_are_batched(server: str, digits):
    before = httpx.get(f"{server}/health").json()["batching"]

    async def send_all():
        async with httpx.AsyncClient(base_url=server, timeout=60) as client:
            sends = [
                client.post("/predict", files={"file": (p.name, p.read_bytes(), "image/png")}) for p, _ in digits * 3
            ]
            return await asyncio.gather(*sends)

    responses = asyncio.run(send_all())
    assert all(r.status_code == 200 for r in responses)
    firsts = [r.json()["predictions"][0]["top"][0]["class"] for r in responses]
    assert firsts[:8] == firsts[8:16] == firsts[16:]  # the same image gives the same answer in any batch
    after = httpx.get(f"{server}/health").json()["batching"]
    samples, batches = after["samples"] - before["samples"], after["batches"] - before["batches"]
    assert samples == 24 and batches < samples  # some requests shared a forward pass


def test_info_health_docs(server: str, trained_run: Path):
    info = httpx.get(f"{server}/info").json()
    summary = json.loads((trained_run / "summary.json").read_text())
    assert info["metrics"] == pytest.approx(summary["test"])
    assert info["spec"]["classes"] == [str(i) for i in range(10)] and info["model"]["name"] == "simple_cnn"
    assert info["top_k"] == 3 and "multipart/form-data" in info["accepts"]
    assert httpx.get(f"{server}/health").json()["status"] == "ok"
    assert httpx.get(f"{server}/docs").status_code == 200
    schema = httpx.get(f"{server}/openapi.json").json()
    assert "multipart/form-data" in schema["paths"]["/predict"]["post"]["requestBody"]["content"]
    page = httpx.get(f"{server}/")
    assert page.status_code == 200 and "<canvas" in page.text


BAD_REQUESTS = [
    ("not an image", {"files": {"file": ("notes.png", b"plain text, not a picture", "image/png")}}, 400, "readable"),
    ("empty file", {"files": {"file": ("empty.png", b"", "image/png")}}, 400, "empty"),
    ("wrong content type", {"json": {"text": "hello"}}, 415, "content type"),
    ("plain text body", {"content": b"hello", "headers": {"content-type": "text/plain"}}, 415, "content type"),
    ("no content type", {"content": b"hello"}, 415, "content type"),
    ("missing field", {"files": {"picture": ("d.png", b"x", "image/png")}}, 422, "missing field 'file'"),
    ("missing body", {"data": {"note": "no file"}, "files": {}}, 415, "content type"),
    ("oversized body", {"content": b"\0" * (9 * 2**20), "headers": {"content-type": "image/png"}}, 413, "too large"),
    ("bad top_k", {"params": {"top_k": 0}, "files": {"file": ("d.png", b"x", "image/png")}}, 422, "top_k"),
    (
        "too many files",
        {"files": [("file", (f"{i}.png", b"x", "image/png")) for i in range(17)]},
        400,
        "Too many files",
    ),
]


@pytest.mark.parametrize(("what", "request_args", "status", "fragment"), BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_requests_get_a_json_4xx(server: str, digits, what, request_args, status, fragment):
    response = httpx.post(f"{server}/predict", timeout=60, **request_args)
    assert response.status_code == status, (what, response.status_code, response.text)
    assert fragment in response.json()["error"]
    good = httpx.post(f"{server}/predict", files={"file": digits[1][0].read_bytes()}, timeout=30)
    assert good.status_code == 200  # still serving


def test_unknown_route_is_json_404(server: str):
    response = httpx.get(f"{server}/nothing-here")
    assert response.status_code == 404 and response.json() == {"error": "Not Found"}


def test_the_worker_factory_survives_pickling(trained_run: Path):
    """uvicorn sends the factory to each worker process by pickle; it must build the app there."""
    import pickle

    from fastapi.testclient import TestClient

    from torchkeel.serve.factory import AppFactory

    factory = pickle.loads(pickle.dumps(AppFactory(trained_run, {"max_batch": 4, "threads": 1})))
    with TestClient(factory()) as client:
        assert client.get("/info").json()["batching"]["max_batch"] == 4


@pytest.mark.slow
def test_several_workers_share_the_port(trained_run: Path, tmp_path: Path, digits):
    with running_server(trained_run, "--workers", "2", log_dir=tmp_path) as url:
        path, label = digits[2]

        async def burst():
            limits = httpx.Limits(max_keepalive_connections=0)  # a new connection per request
            async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
                return await asyncio.gather(
                    *(client.post("/predict", files={"file": path.read_bytes()}) for _ in range(16))
                )

        responses = asyncio.run(burst())
        assert all(r.status_code == 200 for r in responses)
        assert {r.json()["predictions"][0]["top"][0]["class"] for r in responses} == {str(label)}
    log = (tmp_path / "serve.log").read_text()
    assert log.count("Application startup complete") == 2, log


def test_serve_refuses_a_missing_run(tmp_path: Path):
    assert_one_line_error(keel("serve", "no-such-run", cwd=tmp_path), "run folder not found")


def test_help_for_export_and_serve(tmp_path: Path):
    serve_help = keel("serve", "--help", cwd=tmp_path, check=True).stdout
    serve_options = ("--host", "--port", "--workers", "--max-batch", "--max-wait-ms", "--max-body-mb", "--read-timeout")
    for option in (*serve_options, "--threads"):
        assert option in serve_help, option
    export_help = keel("export", "--help", cwd=tmp_path, check=True).stdout
    for option in ("--format", "--quantize", "--out"):
        assert option in export_help, option
