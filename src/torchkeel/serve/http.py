"""HTTP edges of the server: reading a request into a Payload, and every error answered as
JSON ``{"error": "..."}`` with a 4xx status (5xx only for bugs). The limits on what a request
may be (size, time, JSON depth) are checked before, in :mod:`serve.limits`."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from torchkeel import __version__
from torchkeel.errors import KeelError
from torchkeel.serve.inputs import MAX_FILES, InputKind, Payload, RequestError, Upload
from torchkeel.serve.limits import RequestLimits

log = logging.getLogger("torchkeel.serve")
STATIC = Path(__file__).parent / "static"


def page_app(run_dir: Path, description: str, limits: dict[str, Any], page: str, info: dict, about: str) -> FastAPI:
    """What the GAN and language-model servers share: request limits (``limits``: the options of
    :class:`serve.limits.RequestLimits`), errors as one JSON line, the static files, the page
    ``page`` at /, /health and /info (``info``, summarised in the API docs as ``about``)."""
    app = FastAPI(title=f"torchkeel: {run_dir.name}", version=__version__, description=description)
    app.add_middleware(RequestLimits, **limits)
    install_error_handlers(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / page)

    @app.get("/health", summary="Liveness")
    async def health() -> dict[str, Any]:
        return {"status": "ok"}

    @app.get("/info", summary=about)
    async def get_info() -> dict[str, Any]:
        return info

    return app


async def read_payload(request: Request, kind: InputKind) -> Payload:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not kind.takes(content_type):
        raise RequestError(f"content type '{content_type or 'none'}' is not accepted; send {kind.accepts}", 415)
    if content_type == "multipart/form-data":
        form = await request.form(max_files=MAX_FILES, max_fields=MAX_FILES)
        payload = Payload()
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                payload.uploads.append(Upload(printable(key), printable(value.filename or key), await value.read()))
            else:
                payload.fields[printable(key)] = value
        return payload
    body = await request.body()
    if content_type == "application/json":
        try:
            return Payload(json=json.loads(body.decode("utf-8")))
        except ValueError:
            raise RequestError("the body is not valid JSON") from None
    return Payload(uploads=[Upload("body", "upload", body)])


def install_error_handlers(app: FastAPI) -> None:
    async def keel_error(request: Request, e: Exception) -> JSONResponse:
        status = e.status if isinstance(e, RequestError) else 400
        return error_response(str(e), status)

    async def validation_error(request: Request, e: Exception) -> JSONResponse:
        first = e.errors()[0] if isinstance(e, RequestValidationError) and e.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(f"{where}: {first.get('msg', 'invalid request')}", 422)

    async def http_error(request: Request, e: Exception) -> JSONResponse:
        assert isinstance(e, HTTPException)
        return error_response(str(e.detail), e.status_code, e.headers)

    async def internal_error(request: Request, e: Exception) -> JSONResponse:
        log.exception("error while answering %s %s", request.method, request.url.path)
        return JSONResponse({"error": f"internal error ({type(e).__name__}); the server logged it"}, status_code=500)

    app.add_exception_handler(KeelError, keel_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, internal_error)


def error_response(message: str, status: int, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": printable(message)}, status_code=status, headers=headers)


def printable(text: str) -> str:
    """``text`` with any lone surrogate written as its escape (\\ud800), so that it encodes
    as UTF-8: a multipart part may name itself in a charset such as UTF-7 that can make one."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
