"""What the server bounds before a request reaches the app: the body's size, the time its
headers and body take to arrive, and a JSON body's nesting depth and text encoding.

    size     at most ``max_bytes`` (``keel serve --max-body-mb``, 8 MiB): 413 (and the rest
             of the body is read and dropped for at most ``read_timeout`` s)
    headers  complete within ``read_timeout`` s of the connection opening, or of the last
             response on a kept-alive connection (``--read-timeout``, 30 s): the connection
             is closed (there is no request yet to answer)
    body     complete within ``read_timeout`` s of the headers: 408, and the connection closed
    JSON     nested at most MAX_JSON_DEPTH deep, UTF-8, no unpaired surrogate escape: 400
    hang-up  a client that disconnects before its body is complete: one log line

The body is read whole here (it is bounded) and handed on to the app, so the app never
meets a disconnect or a half-read body.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("torchkeel.serve")

READ_TIMEOUT_S = 30.0
# the deepest a request needs is 3 ({"rows": [{...}]}); Python's json recurses once per
# level and fails near 1,000 (sys.getrecursionlimit), so the bound sits far below that
MAX_JSON_DEPTH = 32
# larger JSON bodies are checked on a worker thread: 8 MiB takes 0.1-0.4 s of CPU (numpy,
# which releases the GIL), a few kB some microseconds
INLINE_CHECK_BYTES = 64 * 1024

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")  # \ud800-\udfff: half of a UTF-16 pair


class RequestLimits:
    """ASGI middleware: reads each HTTP request's body within the limits above, then runs
    ``app`` with the body replayed; answers the request itself when a limit is broken."""

    def __init__(self, app: ASGIApp, max_bytes: int, read_timeout: float = READ_TIMEOUT_S):
        self.app, self.max_bytes, self.read_timeout = app, max_bytes, read_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await send_json(send, 413, self._too_large())
            return
        try:
            body = await asyncio.wait_for(self._read(receive), self.read_timeout)
        except BodyTooLarge:
            await send_json(send, 413, self._too_large())
            return
        except ClientGone as e:
            log.info("%s: the client disconnected after %d bytes of its body", _who(scope), e.received)
            return
        except asyncio.TimeoutError:  # noqa: UP041 - a distinct class before Python 3.11
            log.info("%s: the body was not complete after %g s; closed", _who(scope), self.read_timeout)
            await send_json(send, 408, f"the request body did not arrive within {self.read_timeout:g} s", close=True)
            return
        problem = await self._json_problem(body) if _is_json(headers.get(b"content-type", b"")) else None
        if problem is not None:
            await send_json(send, 400, problem)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _read(self, receive: Receive) -> bytes:
        chunks, received = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone(received)
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.max_bytes:
                raise BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _json_problem(self, body: bytes) -> str | None:
        if len(body) <= INLINE_CHECK_BYTES:
            return json_problem(body)
        return await run_in_threadpool(json_problem, body)  # keep the event loop free meanwhile

    def _too_large(self) -> str:
        return f"request body too large: the limit is {self.max_bytes / 2**20:g} MiB"


class BodyTooLarge(Exception):
    pass


class ClientGone(Exception):
    def __init__(self, received: int):
        self.received = received


def json_depth(body: bytes) -> int:
    """How deep the arrays and objects of a JSON text nest, counted without parsing it, from
    the positions of the brackets outside strings (numpy)."""
    codes = np.frombuffer(body, dtype=np.uint8)
    quotes = np.flatnonzero(codes == ord('"'))
    if b"\\" in body:
        quotes = quotes[~_escaped(codes, quotes)]
    folded = codes | 0x20  # "[" and "{" differ only in bit 0x20, as do "]" and "}"
    opens, closes = (_outside_strings(np.flatnonzero(folded == ord(c)), quotes) for c in "{}")
    if not len(opens):
        return 0
    depth = np.arange(1, len(opens) + 1) - np.searchsorted(closes, opens)  # at each opening bracket
    return max(int(depth.max()), 0)


def _outside_strings(positions: np.ndarray, quotes: np.ndarray) -> np.ndarray:
    return positions[np.searchsorted(quotes, positions) % 2 == 0]  # an even number of quotes before


def _escaped(codes: np.ndarray, quotes: np.ndarray) -> np.ndarray:
    """Which quotes follow an odd run of backslashes (\\" is a quote inside a string)."""
    slashes = np.flatnonzero(codes == ord("\\"))
    if not len(slashes) or not len(quotes):
        return np.zeros(len(quotes), dtype=bool)
    starts_run = np.concatenate([[True], np.diff(slashes) != 1])
    run_start = slashes[starts_run][np.cumsum(starts_run) - 1]  # where each backslash's run begins
    i = np.minimum(np.searchsorted(slashes, quotes - 1), len(slashes) - 1)
    run = np.where(slashes[i] == quotes - 1, quotes - run_start[i], 0)  # backslashes right before the quote
    return run % 2 == 1


def json_problem(body: bytes) -> str | None:
    """Why a JSON body is refused before parsing, or None. A body that is not JSON at all
    is left to the app, which says so."""
    depth = json_depth(body)
    if depth > MAX_JSON_DEPTH:
        return f"the JSON body is nested {depth} deep; at most {MAX_JSON_DEPTH} levels are accepted"
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        return f"the JSON body is not UTF-8 text (byte {e.start}): send it as UTF-8"
    if _SURROGATE_ESCAPE.search(body) and _has_lone_surrogate(text):
        return (
            "the JSON body has an unpaired UTF-16 surrogate escape (\\ud800-\\udfff), "
            "which is not a character: send valid Unicode text"
        )
    return None


def _has_lone_surrogate(text: str) -> bool:
    try:
        value = json.loads(text)
    except ValueError:
        return False  # not JSON: the app answers that
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")  # a lone surrogate cannot be encoded
    except UnicodeEncodeError:
        return True
    return False


def _is_json(content_type: bytes) -> bool:
    """application/json or any +json type; no content type counts too (FastAPI parses such a
    body as JSON)."""
    media = content_type.split(b";")[0].strip().lower()
    return media in (b"", b"application/json") or (media.startswith(b"application/") and media.endswith(b"+json"))


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: the disconnect, when it comes

    return replay


def _who(scope: Scope) -> str:
    client = scope.get("client")
    where = f"{client[0]}:{client[1]}" if client else "a client"
    return f"{scope.get('method', '?')} {scope.get('path', '?')} from {where}"


async def send_json(send: Send, status: int, message: str, close: bool = False) -> None:
    """A JSON ``{"error": message}`` response sent straight through ASGI; ``close`` asks the
    server to close the connection at once. Without it, the rest of a refused body is read and
    dropped (for at most ``read_timeout`` s, by :class:`TimedH11Protocol`): a client still
    sending when the server closes would get a reset rather than the answer."""
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class TimedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, which waits for a request's headers for ever (its keep-alive
    timeout applies only while no byte arrives) and reads the rest of an answered request's
    body for ever, with a time limit for both: ``read_timeout`` s after the connection opened
    or after the last response, the connection is closed if no request has begun, or if the
    answered request's body is still arriving (nginx's lingering close, whose lingering_time
    is 30 s too). The limit comes from ``config.read_timeout``, set by :func:`serve`."""

    def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def]
        super().connection_made(transport)
        self._arm_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_timer()
        super().connection_lost(exc)

    def _arm_timer(self) -> None:
        self._disarm_timer()
        timeout = getattr(self.config, "read_timeout", READ_TIMEOUT_S)
        self._timer = self.loop.call_later(timeout, self._close_if_idle)

    def _disarm_timer(self) -> None:
        timer = getattr(self, "_timer", None)
        if timer is not None:
            timer.cancel()

    def _close_if_idle(self) -> None:
        import h11

        waiting = self.conn.their_state is h11.IDLE  # headers incomplete, or never sent
        answered = self.cycle is not None and self.cycle.response_complete
        if (waiting or (answered and self.conn.their_state is h11.SEND_BODY)) and not self.transport.is_closing():
            self.transport.close()  # nothing to answer (or already answered)
