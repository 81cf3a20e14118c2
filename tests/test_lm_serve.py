"""Serving a language model: POST /generate, the server-sent-event stream, request limits (4xx,
and the server keeps serving), then the real `keel serve` on 127.0.0.1 and its page in Chromium."""

import json

import httpx
import pytest
from fastapi.testclient import TestClient
from lm_helpers import corpus_spec, one_torch_thread, write_run  # noqa: F401 (a fixture)

from torchkeel import Generator
from torchkeel.serve.app import create_app


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    return write_run(tmp_path_factory.mktemp("serve") / "lm-run", corpus_spec(block=16))


@pytest.fixture(scope="module")
def client(lm_run):
    with TestClient(create_app(lm_run)) as c:
        yield c


def _events(body: str) -> list[str]:
    """The text pieces of a server-sent-event stream, which must end with the done event."""
    events = [e for e in body.split("\n\n") if e]
    assert events[-1] == "event: done\ndata: {}"
    return [json.loads(e.removeprefix("data: "))["text"] for e in events[:-1]]


def test_generate_returns_the_apis_text_and_the_stream_the_same_in_pieces(client, lm_run):
    request = {"prompt": "ROMEO:", "max_tokens": 25, "temperature": 0.9, "top_k": 30, "top_p": 0.9, "seed": 3}
    expected = Generator.from_run(lm_run).generate("ROMEO:", max_tokens=25, temperature=0.9, top_k=30, top_p=0.9,
                                                   seed=3)  # fmt: skip
    answer = client.post("/generate", json=request)
    assert answer.status_code == 200 and answer.json() == {"prompt": "ROMEO:", "text": expected}
    stream = client.post("/generate/stream", json=request)
    assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
    pieces = _events(stream.text)
    assert "".join(pieces) == expected and len(pieces) == 25  # one character-token per event
    stopped = client.post("/generate", json={**request, "stop": [expected[10:12]]}).json()["text"]
    assert stopped == expected[: expected.index(expected[10:12])]


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"prompt": ""}, 422, "prompt: String should have at least 1 character"),
        ({"prompt": "a" * 8001}, 422, "prompt: String should have at most 8000 characters"),
        ({"prompt": "hi", "max_tokens": 2001}, 422, "max_tokens: Input should be less than or equal to 2000"),
        ({"prompt": "hi", "temperature": 0}, 422, "temperature: Input should be greater than 0"),
        ({"prompt": "hi", "top_p": 1.5}, 422, "top_p: Input should be less than or equal to 1"),
        ({"prompt": "hi", "colour": "red"}, 422, "colour: Extra inputs are not permitted"),
        ({"prompt": "déjà vu"}, 400, "2 character(s) outside this model's 61-character vocabulary: 'à', 'é'"),
    ],
)
def test_bad_requests_are_4xx_and_the_server_keeps_serving(client, body, status, message):
    for path in ("/generate", "/generate/stream"):
        answer = client.post(path, json=body)
        assert answer.status_code == status and message in answer.json()["error"], answer.text
    assert client.post("/generate", json={"prompt": "hi", "max_tokens": 3}).status_code == 200


def test_info_states_the_model_and_the_limits(client, lm_run):
    info = client.get("/info").json()
    assert info["run"] == "lm-run" and info["vocab_size"] == 61 and info["block_size"] == 16
    assert info["limits"] == {"prompt_chars": 8000, "max_tokens": 2000}
    assert client.get("/").text.count("/static/lm.js") == 1


def test_keel_serve_streams_over_http_and_the_page_shows_the_text(lm_run, tmp_path):
    from browser import skip_without_chromium
    from serving import running_server

    with running_server(lm_run, log_dir=tmp_path) as url:
        request = {"prompt": "ROMEO:", "max_tokens": 2000, "seed": 1}
        with httpx.stream("POST", f"{url}/generate/stream", json=request, timeout=60) as response:
            assert response.status_code == 200
            first = next(response.iter_text())  # a piece arrives while the rest is being generated
            assert first.startswith("data: ")
        assert httpx.post(f"{url}/generate", json={"prompt": ""}, timeout=30).status_code == 422
        answer = httpx.post(f"{url}/generate", json={"prompt": "ROMEO:", "max_tokens": 40, "seed": 2}, timeout=60)
        assert answer.status_code == 200 and len(answer.json()["text"]) == 40
        _stream_in_chromium(url, answer.json()["text"])
    announced = (tmp_path / "serve.log").read_text().splitlines()[0]  # what keel serve printed first
    assert announced.endswith("/ (web page), /generate, /generate/stream, /health, /info, /docs"), announced
    skip_without_chromium()  # said in the summary where the page's part could not run


def test_each_servers_listed_endpoints_are_its_apps_routes(client, trained_run, tmp_path):
    from fastapi.routing import APIRoute
    from serving import untrained_gan_app

    from torchkeel.serve.app import COMMON_ENDPOINTS, ENDPOINTS

    apps = {"lm": client.app, "generate": untrained_gan_app(tmp_path), "predict": create_app(trained_run)}
    for server, app in apps.items():
        routes = [r for r in app.routes if isinstance(r, APIRoute)]
        assert {r.path for r in routes if "POST" in r.methods} == set(ENDPOINTS[server]), server
        assert {r.path for r in routes} | {app.docs_url} >= set(COMMON_ENDPOINTS), server


def _stream_in_chromium(url: str, expected: str) -> None:
    """The page in headless Chromium: Generate fills in the text the API gives for the seed."""
    from browser import HAVE_CHROMIUM, chromium_page

    if not HAVE_CHROMIUM:
        return  # the test's last line skips, after its other checks
    with chromium_page(url + "/") as (page, problems):
        page.fill("#prompt", "ROMEO:")
        page.fill("#max_tokens", "40")
        page.fill("#seed", "2")
        page.fill("#temperature", "1")
        page.click("#generate")
        page.wait_for_function("document.getElementById('status').textContent === 'done'", timeout=60_000)
        assert page.text_content("#text") == expected
        assert page.text_content("#shown-prompt") == "ROMEO:"
        page.fill("#prompt", "naïve")  # a character the vocabulary lacks: the server's message is shown
        page.click("#generate")
        page.wait_for_function("document.getElementById('status').textContent.includes('outside')")
    assert problems == [] or all("400" in p for p in problems)  # the failed request's console line
