"""The server for a GAN run: it generates rather than predicts.

    GET  /          a page with a Generate button: the grid for a seed (and class)
    POST /predict   JSON {"n": 16, "seed": 0, "label": null, "nrow": 8} -> image/png grid
    GET  /health, /info, /docs

Generating a grid is one forward pass of the generator over ``n`` noise vectors, already a
batch, so requests are not batched together; the same body always gives the same PNG.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from torchkeel import __version__
from torchkeel.serve.http import page_app

MAX_SAMPLES = 256  # one grid; larger ones are for `keel sample`


class SampleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int = Field(16, ge=1, le=MAX_SAMPLES, description="images in the grid")
    # torch.Generator.manual_seed takes at most 2**64 - 1
    seed: int = Field(0, ge=0, le=2**64 - 1, description="seed of the noise: the same seed gives the same grid")
    label: int | None = Field(None, ge=0, description="class to generate (class-conditional GANs only)")
    nrow: int = Field(8, ge=1, le=64, description="images per row")


def create_gan_app(
    run_dir: Path, model: Any, spec: Any, summary: dict[str, Any], limits: dict[str, Any] | None = None
) -> FastAPI:
    """The app for a finished GAN run whose generator ``model`` is already loaded; ``limits``
    are :class:`RequestLimits`'s options (default: an 8 MiB body)."""
    from torchkeel.train.gan_sample import generate_png

    info = {
        "run": run_dir.name,
        "model": "dcgan",
        "parameters": sum(p.numel() for p in model.parameters()),
        "image_shape": list(spec.input_shape),
        "classes": spec.classes if model.classes else None,
        "metrics": summary.get("test", {}),
        "accepts": 'JSON {"n", "seed", "label", "nrow"}, all optional; answers image/png',
        "torchkeel": __version__,
    }
    description = f"Images from a GAN trained on {spec.name}. POST /predict returns a PNG grid."
    about = "The generator, its image shape, classes and last Frechet distance"
    app = page_app(run_dir, description, limits or {"max_bytes": 8 * 2**20}, "gan.html", info, about)

    @app.post(
        "/predict",
        summary="A PNG grid of generated images",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}},
    )
    async def predict(request: SampleRequest | None = None) -> Response:
        r = request or SampleRequest()
        png = await run_in_threadpool(generate_png, model, spec, r.n, r.seed, r.label, r.nrow, where=run_dir.name)
        return Response(png, media_type="image/png")

    return app
