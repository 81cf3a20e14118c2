"""Helpers for the evaluate-and-tune tests: run folders from in-memory data (tables built from
scikit-learn's embedded sets), and a headless Chromium that opens a page and reports."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from browser import CHROMIUM, launch


def table_bundle(x: np.ndarray, y: np.ndarray, task: str, classes=None, names=None, seed: int = 0):
    """70/15/15 split of a table, standardised with train statistics (as the data contract says)."""
    from torchkeel.data.bundle import DataBundle, DataSpec, Split

    idx = np.random.default_rng(seed).permutation(len(x))
    x, y = x[idx], y[idx]
    a, b = int(0.7 * len(x)), int(0.85 * len(x))
    mean, std = x[:a].mean(0), x[:a].std(0) + 1e-6
    xt = torch.tensor((x - mean) / std, dtype=torch.float32)
    yt = torch.tensor(y, dtype=torch.int64 if task == "classification" else torch.float32)
    if task == "regression":  # standardised targets too, so a few epochs of Adam fit them
        yt = ((yt - yt[:a].mean()) / yt[:a].std()).view(-1, 1)
    extra = {"feature_names": list(names)} if names is not None else {}
    spec = DataSpec("sk-table", "table", task, (xt.shape[1],), classes=classes, extra=extra)
    return DataBundle(spec, Split(xt[:a], yt[:a]), Split(xt[a:b], yt[a:b]), Split(xt[b:], yt[b:]))


def make_run(out: Path, data: Any, raw_config: dict, name: str, model: torch.nn.Module | None = None) -> Path:
    """A finished run folder trained on ``data`` (which no config can load by name): config,
    env, metrics, model, summary, then the report, as `keel train` writes them."""
    from torchkeel import atomic, runs
    from torchkeel.config import validate_config
    from torchkeel.evaluate.report import write_report
    from torchkeel.experiment import save_model
    from torchkeel.models import build
    from torchkeel.train import runtime
    from torchkeel.train.loop import fit

    cfg = validate_config(raw_config)
    run_dir = runs.create_run(out, name)
    atomic.write_text(run_dir / "config.yaml", cfg.to_yaml())
    atomic.write_json(run_dir / "env.json", runtime.environment(torch.device("cpu")))
    runtime.seed_everything(cfg.seed)
    built_by_name = model is None
    run = fit(model if model is not None else build(cfg.model, data.spec), data, cfg, run_dir=run_dir, progress=False)
    if built_by_name:  # a custom module cannot be rebuilt from model.json: the report gets it directly
        save_model(run_dir, run.model, cfg, data.spec)
    summary = {"test": run.evaluate("test"), "epochs": len(run.history), "train_seconds": run.train_seconds}
    atomic.write_json(run_dir / "summary.json", summary)
    write_report(run_dir, model=run.model, data=data)
    return run_dir


def copy_run(run_dir: Path, dest: Path) -> Path:
    target = dest / run_dir.name
    shutil.copytree(run_dir, target)
    return target


def open_in_chromium(html_file: Path) -> dict[str, Any]:
    """Render ``html_file``; return console messages, page errors, failed requests and, per
    <section>, its id, kind, image count and how many images decoded (naturalWidth > 0)."""
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is not installed (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page()
            console, errors, failed = [], [], []
            page.on("console", lambda m: console.append((m.type, m.text)))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("requestfailed", lambda r: failed.append(r.url))
            page.goto(html_file.resolve().as_uri(), wait_until="load")
            sections = page.evaluate(
                """() => [...document.querySelectorAll('section')].map(s => ({
                    id: s.id,
                    kind: s.dataset.kind,
                    images: s.querySelectorAll('img, svg.chart').length,
                    decoded: [...s.querySelectorAll('img')].filter(i => i.complete && i.naturalWidth > 0).length
                        + [...s.querySelectorAll('svg.chart')].filter(c => c.getBoundingClientRect().width > 0
                            && c.querySelectorAll('polyline, rect.bar, rect.cell, circle').length > 0).length,
                    errors: s.querySelectorAll('.error').length,
                }))"""
            )
            requests = page.evaluate("() => performance.getEntriesByType('resource').map(r => r.name)")
        finally:
            browser.close()
    return {"console": console, "errors": errors, "failed": failed, "sections": sections, "requests": requests}
