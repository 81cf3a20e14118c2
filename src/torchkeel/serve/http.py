"""HTTP edges of the server: a request body size limit, reading a request into a Payload,
and every error answered as JSON ``{"error": "..."}`` with a 4xx status (5xx only for bugs)."""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from torchkeel.errors import KeelError
from torchkeel.serve.inputs import MAX_FILES, InputKind, Payload, RequestError, Upload

log = logging.getLogger("torchkeel.serve")


class BodyLimit:
    """Refuses bodies over ``max_bytes`` with 413: at once when Content-Length says so, and
    while reading when a chunked body grows past it, so no request can fill the memory."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await _send_json(send, 413, self._message())
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise HTTPException(413, self._message())
            return message

        await self.app(scope, limited, send)

    def _message(self) -> str:
        return f"request body too large: the limit is {self.max_bytes / 2**20:g} MiB"


async def read_payload(request: Request, kind: InputKind) -> Payload:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not kind.takes(content_type):
        raise RequestError(f"content type '{content_type or 'none'}' is not accepted; send {kind.accepts}", 415)
    if content_type == "multipart/form-data":
        form = await request.form(max_files=MAX_FILES, max_fields=MAX_FILES)
        payload = Payload()
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                payload.uploads.append(Upload(key, value.filename or key, await value.read()))
            else:
                payload.fields[key] = value
        return payload
    body = await request.body()
    if content_type == "application/json":
        try:
            return Payload(json=json.loads(body))
        except ValueError:
            raise RequestError("the body is not valid JSON") from None
    return Payload(uploads=[Upload("body", "upload", body)])


def install_error_handlers(app: FastAPI) -> None:
    async def keel_error(request: Request, e: Exception) -> JSONResponse:
        status = e.status if isinstance(e, RequestError) else 400
        return JSONResponse({"error": str(e)}, status_code=status)

    async def validation_error(request: Request, e: Exception) -> JSONResponse:
        first = e.errors()[0] if isinstance(e, RequestValidationError) and e.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid request')}"}, status_code=422)

    async def http_error(request: Request, e: Exception) -> JSONResponse:
        assert isinstance(e, HTTPException)
        return JSONResponse({"error": str(e.detail)}, status_code=e.status_code, headers=e.headers)

    async def internal_error(request: Request, e: Exception) -> JSONResponse:
        log.exception("error while answering %s %s", request.method, request.url.path)
        return JSONResponse({"error": f"internal error ({type(e).__name__}); the server logged it"}, status_code=500)

    app.add_exception_handler(KeelError, keel_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, internal_error)


async def _send_json(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
