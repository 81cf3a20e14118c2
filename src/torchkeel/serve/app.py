"""The model server: FastAPI on uvicorn over a run's :class:`Predictor`.

    GET  /          the web page (static/): draw or upload a picture, see the top classes
    GET  /health    liveness, and how requests have been batched
    GET  /info      model, data spec, test metrics, what /predict accepts
    POST /predict   inputs -> top-k classes with probabilities (or regression values)
    GET  /docs      OpenAPI documentation

Requests are decoded on worker threads, batched together (:mod:`serve.batching`) and run
under ``torch.inference_mode`` on one inference thread per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import torch
from fastapi import FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from torchkeel import __version__
from torchkeel.data.bundle import DataSpec
from torchkeel.data.kinds import kind_of
from torchkeel.errors import DataError
from torchkeel.runs import read_run
from torchkeel.serve.batching import DynamicBatcher
from torchkeel.serve.http import STATIC, install_error_handlers, read_payload
from torchkeel.serve.inputs import INPUT_KINDS, InputKind, RequestError, Sample
from torchkeel.serve.limits import READ_TIMEOUT_S, RequestLimits
from torchkeel.serve.predictor import Prediction, Predictor

# uploads up to this size are decoded on the event loop: a small PNG decodes in about 0.1 ms,
# less than the hop to a worker thread and back costs
INLINE_DECODE_BYTES = 64 * 1024

PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary", "description": "an image"}},
                    "required": ["file"],
                }
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def input_kind(kind: str) -> InputKind:
    if kind not in INPUT_KINDS:
        raise DataError(
            f"serving {kind} models is not supported yet (served kinds: {', '.join(INPUT_KINDS)}); "
            "use `keel predict` or `keel export` for this run"
        )
    return INPUT_KINDS[kind]


def create_app(
    run_dir: str | Path,
    *,
    max_batch: int = 32,
    max_wait_ms: float = 2.0,
    max_body_mb: float = 8.0,
    threads: int | None = None,
    model_code: Any = None,
    read_timeout: float = READ_TIMEOUT_S,
) -> FastAPI:
    """The app for a finished run; raises a KeelError for a run it cannot serve.
    ``model_code``: a custom model's code, which the run folder is never trusted to name."""
    run_dir = Path(run_dir)
    set_inference_threads(threads)
    limits = {"max_bytes": int(max_body_mb * 2**20), "read_timeout": read_timeout}
    own = _own_server_app(run_dir, model_code, limits, threads)
    if own is not None:
        return own
    predictor = Predictor.from_run(run_dir, model_cls=model_code)
    spec = predictor.spec
    kind = input_kind(spec.kind)
    predictor.top_k = max(spec.num_classes, 2)  # all classes; each request takes its top_k
    run = read_run(run_dir)
    default_k = int(run.config.get("eval", {}).get("top_k", 3))

    def infer(samples: list[Sample]) -> list[Prediction]:
        x = kind.collate([s.x for s in samples], spec)
        return predictor.predict_batch(
            x, [s.source for s in samples], [s.note for s in samples], [s.size for s in samples]
        )

    batcher = DynamicBatcher(infer, max_batch, max_wait_ms)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(
        title=f"torchkeel: {run_dir.name}",
        version=__version__,
        description=f"Predictions from a {spec.task} model trained on {spec.name}. POST /predict takes {kind.accepts}.",
        lifespan=lifespan,
    )
    app.add_middleware(RequestLimits, max_bytes=int(max_body_mb * 2**20), read_timeout=read_timeout)
    install_error_handlers(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    info = describe(run_dir, predictor, kind, run.summary, default_k, max_batch, max_wait_ms)
    add_routes(app, kind, spec, batcher, info, default_k)
    return app


def add_routes(
    app: FastAPI, kind: InputKind, spec: DataSpec, batcher: DynamicBatcher, info: dict[str, Any], default_k: int
) -> None:
    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/health", summary="Liveness and batching statistics")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "batching": batcher.stats.to_dict()}

    @app.get("/info", summary="The model, its data spec, test metrics and what /predict accepts")
    async def get_info() -> dict[str, Any]:
        return info

    @app.post("/predict", summary="Top-k classes with probabilities (or regression values)", openapi_extra=PREDICT_BODY)
    async def predict(
        request: Request,
        top_k: int | None = Query(None, ge=1, le=1000, description=f"classes per input (default {default_k})"),
    ) -> dict[str, Any]:
        payload = await read_payload(request, kind)
        if payload.size() <= INLINE_DECODE_BYTES:
            samples = kind.decode(payload, spec)
        else:  # a large picture takes milliseconds to decode: keep the event loop free meanwhile
            samples = await run_in_threadpool(kind.decode, payload, spec)
        if len(samples) == 1:
            predictions = [await batcher.submit(samples[0])]
        else:
            predictions = await asyncio.gather(*(batcher.submit(s) for s in samples))
        for p in predictions:
            if not p.is_finite():  # JSON has no NaN: a number the model overflowed on
                raise RequestError(f"{p.source}: the model's output is not a finite number for this input", 422)
        k = top_k or default_k
        return {"predictions": [trimmed(p, k) for p in predictions]}


def trimmed(prediction: Prediction, k: int) -> dict[str, Any]:
    d = prediction.to_dict()
    if "top" in d:
        d["top"] = d["top"][:k]
    return d


def describe(
    run_dir: Path,
    predictor: Predictor,
    kind: InputKind,
    summary: dict[str, Any],
    default_k: int,
    max_batch: int,
    max_wait_ms: float,
) -> dict[str, Any]:
    spec = predictor.spec.to_dict()
    # vocabularies and column tables can be large; /info keeps the scalar facts
    spec["extra"] = {k: v for k, v in spec["extra"].items() if isinstance(v, str | int | float | bool)}
    return {
        "run": run_dir.name,
        "model": _model_json(run_dir).get("model", {}),
        "parameters": sum(p.numel() for p in predictor.model.parameters()),
        "spec": spec,
        "metrics": summary.get("test", {}),
        "accepts": kind.accepts,
        "top_k": default_k,
        "batching": {"max_batch": max_batch, "max_wait_ms": max_wait_ms},
        "columns": _table_columns(predictor.spec),
        "torch_threads": torch.get_num_threads(),
        "torchkeel": __version__,
    }


def _table_columns(spec: DataSpec) -> list[str] | None:
    """The columns a table model's rows must have (None for other models)."""
    if not kind_of(spec).features:
        return None
    from torchkeel.data.table_encoder import TableEncoder

    return list(TableEncoder.from_dict(spec.extra["table"]["encoder"]).columns)


def _model_json(run_dir: Path) -> dict[str, Any]:
    import json

    meta = json.loads((run_dir / "model.json").read_text(encoding="utf-8"))
    return meta if isinstance(meta, dict) else {}


def set_inference_threads(threads: int | None, workers: int = 1) -> None:
    """Intra-op threads for this process (default: its share of the cores); one inter-op
    thread, since batches never run concurrently. On a busy machine more threads than free
    cores make OpenMP's barriers stall for whole scheduler slices (tens of ms per op)."""
    torch.set_num_threads(threads or max(1, (os.cpu_count() or 1) // workers))
    with contextlib.suppress(RuntimeError):  # already set, or inter-op work already ran here
        torch.set_num_interop_threads(1)


# the endpoints of each server (Task.server), besides the page at / and /health, /info, /docs;
# tests/test_serve_kinds.py checks them against the routes of each server's app
ENDPOINTS = {"predict": ("/predict",), "generate": ("/predict",), "lm": ("/generate", "/generate/stream")}
COMMON_ENDPOINTS = ("/health", "/info", "/docs")


def check_servable(run_dir: Path, model_code: Any = None) -> tuple[str, ...]:
    """The endpoints the run's server has (``keel serve`` lists them); fails (KeelError) for a
    run that cannot be served, before any server starts."""
    from torchkeel.run_model import load_model
    from torchkeel.tasks import task_of

    _, spec, meta = load_model(run_dir, "cpu", model_code)
    task_of(spec).require("serve", run_dir.name)
    server = _server(meta)
    if server == "predict":
        input_kind(spec.kind)  # a kind this server cannot take fails here
    return (*ENDPOINTS[server], *COMMON_ENDPOINTS)


def _server(meta: dict[str, Any]) -> str:
    """Which server a run's task has: "predict" (POST /predict, here), "generate" (a GAN's,
    serve/gan_app.py) or "lm" (a language model's, serve/lm_app.py)."""
    from torchkeel.models import task_name
    from torchkeel.tasks import TASKS

    model, spec = meta.get("model") or {}, meta.get("spec") or {}
    name = task_name(str(model.get("name", "")), str(spec.get("task", "")))
    return TASKS[name].server if name in TASKS else "predict"


def _own_server_app(run_dir: Path, model_code: Any, limits: dict[str, Any], threads: int | None) -> FastAPI | None:
    """The app of a run whose task has its own server: a GAN's (serve/gan_app.py) or a
    language model's (serve/lm_app.py); None for the others (and unfinished runs, which
    Predictor.from_run explains). ``threads``: the user's --threads, which a language model's
    own choice (one thread for a small model) never overrides."""
    if not (run_dir / "model.json").is_file():
        return None
    server = _server(_model_json(run_dir))
    if server == "lm":
        from torchkeel.generation import Generator
        from torchkeel.serve.lm_app import create_lm_app
        from torchkeel.train.runtime import set_threads
        from torchkeel.train.threads import decode_threads

        generator = Generator.from_run(run_dir, model_code)
        if threads is None:
            set_threads(decode_threads(generator.model))
        return create_lm_app(run_dir, generator, read_run(run_dir).summary, limits)
    if server == "generate":
        from torchkeel.run_model import load_model
        from torchkeel.serve.gan_app import create_gan_app

        model, spec, _ = load_model(run_dir)
        return create_gan_app(run_dir, model.eval(), spec, read_run(run_dir).summary, limits)
    return None
