"""The server's limits (serve/limits.py) and its 4xx answers to malformed bodies: JSON nested
too deep, lone surrogates, table values of the wrong type, bad GAN seeds. Then, against a real
`keel serve` and raw sockets: a client that hangs up mid-body is one log line, a slow body is
answered 408 and closed, slow headers are closed, and a port in use is a one-line error."""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path

import pytest
from conftest import assert_one_line_error, keel
from fastapi.testclient import TestClient
from serving import digit_png, free_port, running_server, untrained_gan_app

from torchkeel.serve.app import create_app
from torchkeel.serve.limits import MAX_JSON_DEPTH, json_depth

JSON = {"content-type": "application/json"}
SLOW_S = 1.0  # the --read-timeout of the real server below


@pytest.fixture(scope="module")
def clients(trained_run: Path, text_run: Path, mixed_table_run: Path, tmp_path_factory) -> dict[str, TestClient]:
    apps = {
        "image": create_app(trained_run, threads=1),
        "text": create_app(text_run, threads=1),
        "table": create_app(mixed_table_run, threads=1),
        "gan": untrained_gan_app(tmp_path_factory.mktemp("gan")),
    }
    with contextlib.ExitStack() as stack:
        yield {kind: stack.enter_context(TestClient(app, raise_server_exceptions=False)) for kind, app in apps.items()}


def post(client: TestClient, body: bytes, headers: dict[str, str] = JSON):
    return client.post("/predict", content=body, headers=headers)


def test_json_depth_counts_brackets_outside_strings():
    assert json_depth(b'{"a": "[[[{{", "b": [1, [2, {}]]}') == 4
    assert json_depth(rb'["\"[[[", "\\", []]') == 2  # escaped quotes and backslashes stay inside the string
    assert json_depth(b'"just a string"') == json_depth(b"") == 0


@pytest.mark.parametrize("kind", ["image", "text", "table", "gan"])
def test_json_nested_too_deep_is_refused_before_parsing(clients, kind: str):
    deep = post(clients[kind], b"[" * 100_000 + b"]" * 100_000)  # was a RecursionError and a 500
    assert deep.status_code == 400 and "nested 100000 deep" in deep.json()["error"], deep.text
    levels = MAX_JSON_DEPTH - 1  # inside the {"text": ...} object: the limit itself, which is accepted
    at_limit = post(clients[kind], b'{"text": ' + b"[" * levels + b"]" * levels + b"}")
    assert at_limit.status_code in (415, 422), at_limit.text  # refused by the app, for what it holds
    assert clients[kind].get("/health").status_code == 200


def test_a_chunked_body_is_cut_off_at_the_size_limit(clients):
    chunks = iter([b" " * 2**20] * 9)  # no Content-Length: 9 MiB in chunks, over the 8 MiB limit
    response = clients["text"].post("/predict", content=chunks, headers=JSON)
    assert response.status_code == 413 and "the limit is 8 MiB" in response.json()["error"], response.text


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        ("text", rb'{"text": "\ud800"}'),
        ("text", rb'{"texts": ["fine", "a\udfffb"]}'),
        ("text", rb'{"text": "\ude00\ud83d"}'),  # a pair in the wrong order is two lone halves
        ("table", rb'{"row": {"size": 1, "colour": "\ud800"}}'),
        ("table", rb'{"row": {"size": "\ud800", "colour": "red"}}'),
        ("gan", rb'{"\ud800": 1}'),
    ],
)
def test_a_lone_surrogate_is_a_400(clients, kind: str, body: bytes):
    response = post(clients[kind], body)
    assert response.status_code == 400 and "surrogate" in response.json()["error"], response.text


def test_json_must_be_utf8_and_a_surrogate_pair_is_fine(clients):
    raw = post(clients["text"], b'{"text": "\xed\xa0\x80 team"}')  # a surrogate encoded as bytes: not UTF-8
    assert raw.status_code == 400 and "not UTF-8" in raw.json()["error"], raw.text
    latin = post(clients["text"], '{"text": "caf\xe9 goal"}'.encode("latin-1"))
    assert latin.status_code == 400 and "not UTF-8" in latin.json()["error"], latin.text
    pair = post(clients["text"], rb'{"text": "goal \ud83d\ude00 team"}')  # an emoji, escaped as JSON escapes it
    assert pair.status_code == 200 and pair.json()["predictions"][0]["source"] == "goal \U0001f600 team"


@pytest.mark.parametrize(
    ("row", "column", "shown"),
    [
        ({"size": [1, 2], "colour": "red"}, "size", "[1, 2]"),
        ({"size": {"a": 1}, "colour": "red"}, "size", '{"a": 1}'),
        ({"size": True, "colour": "red"}, "size", "true"),
        ({"size": 10**400, "colour": "red"}, "size", "1000000000"),  # beyond float64
        ({"size": 1.0, "colour": ["red"]}, "colour", '["red"]'),
        ({"size": 1.0, "colour": {"name": "red"}}, "colour", '{"name": "red"}'),
    ],
)
def test_table_values_are_checked_per_column_type(clients, row, column: str, shown: str):
    response = clients["table"].post("/predict", json={"rows": [{"size": 2.0, "colour": "blue"}, row]})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert f"row 2, column '{column}' takes" in error and shown in error, error


@pytest.mark.parametrize(
    ("body", "shown"),
    [
        (b'{"row": {"size": 1e400, "colour": "red"}}', "Infinity"),  # JSON's 1e400 reads as inf
        (b'{"row": {"size": Infinity, "colour": "red"}}', "Infinity"),
        (b'{"row": {"size": 1e300, "colour": "red"}}', "1e+300"),  # finite, but not in float32
        (b'{"row": {"size": "1e999", "colour": "red"}}', '"1e999"'),  # a text read as a CSV cell is
    ],
)
def test_table_numbers_must_be_finite(clients, body: bytes, shown: str):
    response = post(clients["table"], body)
    assert response.status_code == 422 and "column 'size'" in response.json()["error"], response.text
    assert shown in response.json()["error"]


def test_an_output_that_overflows_is_a_422(clients):
    """3e38 is a float32, but the regression's last layer and its target scale overflow on it."""
    response = clients["table"].post("/predict", json={"rows": [{"size": 2.0, "colour": "red"}, {"size": 3e38}]})
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "row 2: the model's output is not a finite number for this input"


def test_table_values_a_csv_cell_could_hold_are_accepted(clients):
    rows = [{"size": None, "colour": None}, {"size": "n/a", "colour": 3}, {"size": "7.5", "colour": True}]
    response = clients["table"].post("/predict", json={"rows": rows})
    assert response.status_code == 200 and len(response.json()["predictions"]) == 3, response.text


def test_a_gan_seed_beyond_torch_is_a_422(clients):
    response = clients["gan"].post("/predict", json={"n": 2, "seed": 2**64})  # was a 500 from manual_seed
    assert response.status_code == 422 and "seed" in response.json()["error"], response.text
    assert clients["gan"].post("/predict", json={"n": 2, "seed": 2**64 - 1}).status_code == 200
    label = clients["gan"].post("/predict", json={"n": 2, "label": 10**30})
    assert label.status_code == 400 and "class index" in label.json()["error"], label.text


def test_a_multipart_filename_in_utf7_with_a_lone_surrogate(clients, tmp_path: Path):
    """Starlette decodes part names in the body's charset: UTF-7's "+2AA-" is a lone \\ud800."""
    png = digit_png(tmp_path, 0)[0].read_bytes()
    for data, status in ((png, 200), (b"not a picture", 400)):
        body = (
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="+2AA-.png"\r\n'
            b"Content-Type: image/png\r\n\r\n" + data + b"\r\n--b--\r\n"
        )
        response = post(clients["image"], body, {"content-type": "multipart/form-data; boundary=b; charset=utf-7"})
        assert response.status_code == status, response.text
        assert "\\ud800.png" in response.text  # the name, written as its escape


# --- a real server, raw sockets -----------------------------------------------------------


@pytest.fixture(scope="module")
def slow_server(text_run: Path, tmp_path_factory) -> tuple[tuple[str, int], Path]:
    log_dir = tmp_path_factory.mktemp("slow")
    with running_server(text_run, "--read-timeout", str(SLOW_S), "--max-body-mb", "1", log_dir=log_dir) as url:
        host, port = url.removeprefix("http://").split(":")
        yield (host, int(port)), log_dir / "serve.log"


def request_head(length: int | None) -> bytes:
    """A POST /predict's head announcing ``length`` bytes of JSON (None: a chunked body)."""
    framing = "Transfer-Encoding: chunked" if length is None else f"Content-Length: {length}"
    return f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{framing}\r\n\r\n".encode()


def read_until_closed(sock: socket.socket, limit_s: float) -> bytes:
    """Everything the server sends until it closes the connection (AssertionError after limit_s)."""
    sock.settimeout(limit_s)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except TimeoutError:
        raise AssertionError(f"the server kept the connection open for {limit_s} s; it sent {received!r}") from None
    return received


def wait_for_lines(log: Path, fragment: str, count: int, limit_s: float = 20) -> list[str]:
    deadline = time.monotonic() + limit_s
    while True:
        lines = [line for line in log.read_text().splitlines() if fragment in line]
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.1)


def test_a_client_that_hangs_up_mid_body_is_one_log_line(slow_server):
    address, log = slow_server
    before = log.read_text().splitlines()
    for _ in range(10):
        with socket.create_connection(address) as sock:
            sock.sendall(request_head(1000) + b'{"text": "goal')  # 14 of 1000 bytes, then gone
    lines = wait_for_lines(log, "the client disconnected after", 10)
    time.sleep(0.5)  # a traceback would come right after its line
    new = log.read_text().splitlines()[len(before) :]
    assert len(lines) == 10 and new == lines, "\n".join(new)  # one line each, nothing else


def test_slow_bodies_are_answered_408_and_closed(slow_server):
    address, log = slow_server
    sockets = [socket.create_connection(address) for _ in range(30)]
    try:
        started = time.monotonic()
        for sock in sockets:
            sock.sendall(request_head(100) + b'{"text": ')  # and never the rest
        answers = [read_until_closed(sock, SLOW_S + 10) for sock in sockets]
        assert time.monotonic() - started < SLOW_S + 10
    finally:
        for sock in sockets:
            sock.close()
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 408 ") and b"did not arrive within 1 s" in answer, answer
    assert len(wait_for_lines(log, "was not complete after 1 s", 30)) >= 30


@pytest.mark.parametrize("sent", [b"", b"POST /predict HTTP/1.1\r\nHost: x\r\n"], ids=["nothing", "half the headers"])
def test_slow_headers_are_closed(slow_server, sent: bytes):
    address, _ = slow_server
    with socket.create_connection(address) as sock:
        sock.sendall(sent)
        started = time.monotonic()
        assert read_until_closed(sock, SLOW_S + 10) == b""  # no request yet: nothing to answer
        assert time.monotonic() - started >= SLOW_S * 0.9


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_body_over_the_limit_is_answered_while_the_client_still_sends(slow_server, framing: str):
    """The server reads and drops the rest: closing at once would reset the connection under
    the client's feet, and it might never read the 413."""
    address, _ = slow_server
    body = b" " * (16 * 2**20)  # over the 1 MiB limit, and more than the sockets buffer
    if framing == "chunked":
        message = request_head(None) + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    else:
        message = request_head(len(body)) + body
    with socket.create_connection(address) as sock:
        sock.sendall(message)
        sock.settimeout(10)
        answer = b""
        while not answer.endswith(b"}"):  # the end of the JSON error
            answer += sock.recv(65536) or b"}"
    assert answer.startswith(b"HTTP/1.1 413 ") and b"the limit is 1 MiB" in answer, answer


def test_a_refused_body_is_read_for_the_read_timeout_then_closed(slow_server):
    address, _ = slow_server
    with socket.create_connection(address) as sock:
        sock.sendall(request_head(100 * 2**20) + b"x" * 1000)  # 100 MiB announced, 1 kB sent
        answer = read_until_closed(sock, SLOW_S + 10)
    assert answer.startswith(b"HTTP/1.1 413 "), answer


def test_a_whole_request_sent_slowly_within_the_limit_is_answered(slow_server):
    address, _ = slow_server
    body = b'{"text": "the goal of the team"}'
    with socket.create_connection(address) as sock:
        for piece in (request_head(len(body))[:20], request_head(len(body))[20:], body[:10], body[10:]):
            sock.sendall(piece)
            time.sleep(SLOW_S / 10)
        answer = read_until_closed(sock, SLOW_S + 10)  # then closed, idle for the read timeout
    assert answer.startswith(b"HTTP/1.1 200 ") and b'"sport"' in answer, answer


def test_a_port_in_use_is_a_one_line_error(text_run: Path, tmp_path: Path):
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        proc = keel("serve", str(text_run), "--port", str(port), cwd=tmp_path, timeout=60)
    assert_one_line_error(proc, f"port {port} is in use", "--port")
