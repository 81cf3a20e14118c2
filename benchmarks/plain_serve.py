"""The peer for benchmarks/serve_load.py: serving a PyTorch model with FastAPI the obvious way.

One request = one forward pass, preprocessing written inline, the model called inside the
async endpoint, no batching. It serves the same trained model (loaded from the run folder).
Usage: python benchmarks/plain_serve.py RUN_DIR PORT [THREADS]  (THREADS: torch.set_num_threads;
default: torch's own choice, as a plain script leaves it)
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import torch
import uvicorn
from fastapi import FastAPI, File, UploadFile
from PIL import Image

from torchkeel.experiment import load_model

run_dir, port = Path(sys.argv[1]), int(sys.argv[2])
if len(sys.argv) > 3:
    torch.set_num_threads(int(sys.argv[3]))
model, spec, _ = load_model(run_dir)
channels, height, width = spec.input_shape
mean = torch.tensor(spec.mean).view(-1, 1, 1)
std = torch.tensor(spec.std).view(-1, 1, 1)
app = FastAPI()


@app.get("/health")
def health() -> dict:
    return {"status": "ok"}


@app.post("/predict")
async def predict(file: UploadFile = File(...)) -> dict:  # noqa: B008 (FastAPI's idiom)
    image = Image.open(io.BytesIO(await file.read())).convert("L" if channels == 1 else "RGB").resize((width, height))
    x = torch.from_numpy(np.array(image, dtype=np.float32) / 255.0).view(height, width, channels).permute(2, 0, 1)
    x = ((x - mean) / std).unsqueeze(0)  # (1, C, H, W)
    with torch.no_grad():
        probabilities = torch.softmax(model(x), dim=1)[0]
    top = probabilities.topk(3)
    return {
        "top": [
            {"class": spec.classes[i], "probability": p}
            for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
        ]
    }


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=port, access_log=False, log_level="warning")
