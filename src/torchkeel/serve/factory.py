"""The app factory uvicorn's worker processes call, picklable and cheap to import: a worker
unpickles it (importing only this module) and answers uvicorn's health checks before it
spends seconds importing torch and loading the model inside the call."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class AppFactory:
    run_dir: Path
    options: dict[str, Any] = field(default_factory=dict)

    def __call__(self) -> Any:
        from torchkeel.serve.app import create_app

        return create_app(self.run_dir, **self.options)
