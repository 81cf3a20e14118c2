"""`POST /predict` fuzzed with hypothesis for every kind of model the server serves (image,
text, table, and a GAN's generator): random JSON shapes and values, text encodings, nesting,
truncation, raw bytes, multipart bodies built piece by piece, content types and query
strings. Every answer is a 2xx or a 4xx with a JSON {"error": ...} (never a 5xx), and /health
still answers after each request. The apps run in-process (TestClient) with a small body
limit, so that the fuzzed sizes cross it."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serving import digit_png, untrained_gan_app

from torchkeel.serve.app import create_app

FAST_CASES = 60  # per kind in the default run (the same cases every run); the slow run takes SLOW_CASES
SLOW_CASES = 1500
MAX_BODY_MB = 1 / 16  # 64 KiB: the padding strategy below reaches past it

CONTENT_TYPES = [
    "application/json",
    "application/json; charset=utf-16",
    "application/problem+json",
    "text/plain",
    "text/plain; charset=latin-1",
    "image/png",
    "application/octet-stream",
    "multipart/form-data",
    "",
    "x/y; ;=;",
]
# texts with what JSON and Python make of Unicode: lone and swapped surrogates, NUL, RTL, emoji
ODD_TEXTS = ["\ud800", "a\udfffb", "\ude00\ud83d", "\x00", "\u202egoal", "\U0001f600 team", "", " ", "the goal"]

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats()  # NaN and infinities included: Python's json writes and reads them
    | st.text(max_size=20)
    | st.sampled_from(ODD_TEXTS)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12,
)


def documents(kind: str, columns: list[str]) -> st.SearchStrategy:
    """JSON documents shaped more or less like what ``kind`` takes."""
    texts = st.text(max_size=40) | st.sampled_from(ODD_TEXTS) | values
    rows = st.dictionaries(st.sampled_from(columns or ["x"]) | st.text(max_size=6), scalars | values, max_size=6)
    shaped = {
        "text": st.fixed_dictionaries({"text": texts}) | st.fixed_dictionaries({"texts": st.lists(texts, max_size=6)}),
        "table": st.fixed_dictionaries({"row": rows}) | st.fixed_dictionaries({"rows": st.lists(rows, max_size=6)}),
        "gan": st.dictionaries(st.sampled_from(["n", "seed", "label", "nrow"]) | st.text(max_size=4), values),
        "image": st.fixed_dictionaries({"file": texts}),
    }[kind]
    return shaped | values


@st.composite
def json_bodies(draw, kind: str, columns: list[str]) -> bytes:
    """A document written as JSON, then sent as it is or with one change: re-encoded, nested
    deeper, padded, or cut and spliced with random bytes."""
    text = json.dumps(draw(documents(kind, columns)), ensure_ascii=draw(st.booleans()))
    change = draw(st.sampled_from(["none", "none", "encoding", "depth", "padding", "splice"]))
    encoding = draw(st.sampled_from(["utf-16", "latin-1", "utf-7"])) if change == "encoding" else "utf-8"
    body = text.encode(encoding, "surrogatepass" if encoding.startswith("utf-") else "replace")
    if change == "depth":
        depth = draw(st.sampled_from([30, 33, 1000, 100_000]))
        body = b"[" * depth + body + b"]" * depth
    if change == "padding":  # whitespace is valid JSON; 70 kB is over the limit
        body += b" " * draw(st.sampled_from([1000, 70_000]))
    if change == "splice":
        cut = draw(st.integers(0, len(body)))
        body = body[:cut] + draw(st.binary(max_size=8)) + body[cut + draw(st.integers(0, 4)) :]
    return body


@st.composite
def multipart_bodies(draw, png: bytes) -> tuple[bytes, str]:
    """(body, content type) of a multipart request assembled part by part, sometimes broken."""
    boundary = draw(st.sampled_from(["b0undary", "b0undary", "x" * 70, "a b", "--"]))
    parts = []
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 0, 17]))):  # MAX_FILES is 16
        name = draw(st.sampled_from(["file"] * 4 + ["picture", "", '"', "fi\u00e9le"]))
        filename = draw(
            st.sampled_from([None, "d.png", "+2AA-.png", "../../x", "\u00e9\U0001f600"]) | st.text(max_size=8)
        )
        disposition = f'form-data; name="{name}"' + ("" if filename is None else f'; filename="{filename}"')
        head = f"Content-Disposition: {disposition}\r\n"
        head += draw(st.sampled_from(["", "Content-Type: image/png\r\n", "Content-Type: ;;\r\n"]))
        broken = st.sampled_from([png[: len(png) // 2], b"", b"\x89PNG\r\n\x1a\n"]) | st.binary(max_size=64)
        data = draw(st.just(png) | broken)
        parts.append(f"--{boundary}\r\n{head}\r\n".encode() + data + b"\r\n")
    body = b"".join(parts) + draw(st.sampled_from([f"--{boundary}--\r\n".encode()] * 3 + [b"", b"--"]))
    if draw(st.integers(0, 3)) == 0:
        body = body[: draw(st.integers(0, len(body)))]
    charset = draw(st.sampled_from(["", "", "; charset=utf-7", "; charset=no-such", "; charset=utf-16"]))
    declared = draw(st.sampled_from([f"; boundary={boundary}"] * 3 + [f'; boundary="{boundary}"', "", "; boundary="]))
    return body, f"multipart/form-data{declared}{charset}"


@st.composite
def requests(draw, kind: str, columns: list[str], png: bytes) -> dict:
    """Keyword arguments of one ``client.post("/predict", ...)``."""
    usual = ["multipart"] * 3 if kind == "image" else ["json"] * 3
    shape = draw(st.sampled_from([*usual, "json", "multipart", "bytes"]))
    if shape == "multipart":
        body, content_type = draw(multipart_bodies(png))
    else:
        body = draw(json_bodies(kind, columns)) if shape == "json" else draw(st.binary(max_size=256) | st.just(png))
        content_type = draw(
            st.sampled_from(["application/json" if shape == "json" else "image/png"] * 8 + CONTENT_TYPES)
        )
    top_k = {"none": None, "int": str(draw(st.integers(-2, 2000))), "text": draw(st.text(max_size=4))}[
        draw(st.sampled_from(["none", "none", "none", "int", "text"]))
    ]
    return {
        "content": body,
        "headers": {"content-type": content_type} if content_type else {},
        "params": {} if top_k is None else {"top_k": top_k},
    }


@pytest.fixture(scope="module")
def servers(trained_run: Path, text_run: Path, mixed_table_run: Path, tmp_path_factory) -> dict:
    """kind -> (client, the table's columns, a valid PNG)."""
    folder = tmp_path_factory.mktemp("fuzz")
    png = digit_png(folder, 3)[0].read_bytes()
    apps = {
        "image": create_app(trained_run, threads=1, max_body_mb=MAX_BODY_MB),
        "text": create_app(text_run, threads=1, max_body_mb=MAX_BODY_MB),
        "table": create_app(mixed_table_run, threads=1, max_body_mb=MAX_BODY_MB),
        "gan": untrained_gan_app(folder, max_bytes=int(MAX_BODY_MB * 2**20)),
    }
    with contextlib.ExitStack() as stack:
        clients = {
            kind: stack.enter_context(TestClient(app, raise_server_exceptions=False)) for kind, app in apps.items()
        }
        yield {kind: (client, client.get("/info").json().get("columns") or [], png) for kind, client in clients.items()}


def fuzz(servers: dict, kind: str, cases: int, derandomize: bool) -> None:
    client, columns, png = servers[kind]
    statuses: list[int] = []

    @settings(
        max_examples=cases,
        deadline=None,
        database=None,
        derandomize=derandomize,
        suppress_health_check=list(HealthCheck),
    )
    @given(requests(kind, columns, png))
    def one(request: dict) -> None:
        response = client.post("/predict", **request)
        statuses.append(response.status_code)
        assert response.status_code < 500, (request, response.text)
        if response.status_code >= 400:
            error = response.json()["error"]
            assert error and "Traceback" not in error, response.text
        assert client.get("/health").status_code == 200

    one()
    seen = {s: statuses.count(s) for s in sorted(set(statuses))}
    print(f"fuzz /predict ({kind}): {len(statuses)} requests, statuses {seen}")
    assert len(statuses) >= cases * 0.9, f"only {len(statuses)} requests ran"
    assert len(seen) >= 3, seen  # the cases reach past the first check: several distinct answers


@pytest.mark.parametrize("kind", ["image", "text", "table", "gan"])
def test_fuzz_predict(servers, kind: str):
    fuzz(servers, kind, FAST_CASES, derandomize=True)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["image", "text", "table", "gan"])
def test_fuzz_predict_long(servers, kind: str):
    fuzz(servers, kind, SLOW_CASES, derandomize=False)
