"""The server for a language-model run (the task's ``server = "lm"``): it generates text.

    GET  /                  a page: type a prompt, watch the text appear as it is generated
    POST /generate          JSON {"prompt": "ROMEO:", "max_tokens": 200, "temperature": 0.8, ...}
                            -> {"text": "...", "prompt": "ROMEO:"}
    POST /generate/stream   the same JSON -> server-sent events: one ``data: {"text": piece}``
                            per piece as it is produced, then ``event: done``
    GET  /health, /info, /docs

A request is checked whole before anything is generated: an empty or oversized prompt,
characters the vocabulary lacks, or an option out of range is a 4xx JSON error and the server
keeps serving. Generation runs on worker threads, one sequence per request.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from torchkeel import __version__
from torchkeel.serve.http import page_app

MAX_PROMPT_CHARS = 8_000  # per request; longer texts are cropped to the model's context anyway
MAX_SERVED_TOKENS = 2_000  # new tokens per request: a request holds a worker thread while it runs


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(..., min_length=1, max_length=MAX_PROMPT_CHARS, description="the text to continue")
    max_tokens: int = Field(200, ge=1, le=MAX_SERVED_TOKENS, description="new tokens at most")
    temperature: float = Field(1.0, gt=0, le=100, description="> 0: below 1 sharper, above 1 more varied")
    top_k: int | None = Field(None, ge=1, description="sample from the k most likely tokens only (1: greedy)")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling: the most likely tokens holding this mass")
    repetition_penalty: float = Field(1.0, ge=1, le=100, description=">= 1: tokens already seen made less likely")
    stop: list[str] = Field(default_factory=list, max_length=8, description="end at the first of these strings")
    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="the same seed gives the same text")
    drop_unknown: bool = Field(False, description="leave out prompt characters the vocabulary lacks")

    def options(self) -> dict[str, Any]:
        return self.model_dump(exclude={"prompt"})


def create_lm_app(
    run_dir: Path, generator: Any, summary: dict[str, Any], limits: dict[str, Any] | None = None
) -> FastAPI:
    """The app for a finished language-model run whose ``generator`` (a Generator) is loaded;
    ``limits`` are :class:`RequestLimits`'s options (default: a 1 MiB body)."""
    description = "Text from a language model. POST /generate returns it whole, /generate/stream as it is made."
    about = "The model, its vocabulary and context, test metrics and the request limits"
    info = describe(run_dir, generator, summary)
    app = page_app(run_dir, description, limits or {"max_bytes": 2**20}, "lm.html", info, about)

    @app.post("/generate", summary="The continuation of a prompt, whole")
    async def generate(request: GenerateRequest) -> dict[str, Any]:
        text = await run_in_threadpool(generator.generate, request.prompt, **request.options())
        return {"prompt": request.prompt, "text": text}

    @app.post("/generate/stream", summary="The continuation of a prompt as server-sent events, piece by piece")
    async def generate_stream(request: GenerateRequest) -> StreamingResponse:
        # checked (and the prompt encoded) here, so a bad request is a 4xx before the stream starts
        pieces = await run_in_threadpool(generator.generate, request.prompt, stream=True, **request.options())
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # proxies: pass each event on
        return StreamingResponse(events(pieces), media_type="text/event-stream", headers=headers)

    return app


def events(pieces: Iterator[str]) -> Iterator[str]:
    """Server-sent events (the WHATWG HTML standard's text/event-stream): JSON data lines, so a
    piece's newlines cannot end an event; Starlette runs this iterator on a worker thread."""
    for piece in pieces:
        yield f"data: {json.dumps({'text': piece})}\n\n"
    yield "event: done\ndata: {}\n\n"


def describe(run_dir: Path, generator: Any, summary: dict[str, Any]) -> dict[str, Any]:
    from torchkeel.models import count_parameters

    model = generator.model
    return {
        "run": run_dir.name,
        "parameters": count_parameters(model),
        "vocab_size": generator.tokenizer.vocab_size,
        "block_size": model.block_size,
        "tokenizer": type(generator.tokenizer).__name__,
        "metrics": summary.get("test", {}),
        "accepts": 'JSON {"prompt", "max_tokens", "temperature", "top_k", "top_p", "repetition_penalty", "stop", '
        '"seed", "drop_unknown"}; prompt required',
        "limits": {"prompt_chars": MAX_PROMPT_CHARS, "max_tokens": MAX_SERVED_TOKENS},
        "torchkeel": __version__,
    }
