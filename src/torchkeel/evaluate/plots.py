"""Pictures as PNG bytes: image mosaics drawn with PIL, and the figures that are pictures more
than charts (token colours, attention matrices) with matplotlib's Agg renderer.

The charts (lines, bars, histograms, heat maps) are SVG, in evaluate/charts.py. matplotlib is
imported where a figure needs it, not with this module: the default run's report draws none.
Figures are built as ``matplotlib.figure.Figure`` directly (no pyplot): nothing global is
switched, no window opens, and it works on a machine without a display.
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Sequence
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from torchkeel.evaluate.charts import PALETTE  # the report's colours, one list

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 100
# the anchor points (position, value) of matplotlib's "hot" and "jet" colour maps, per channel,
# linear between them: the saliency and Grad-CAM pictures colour their maps without matplotlib
MAPS = {
    "hot": (
        ((0, 0.0416), (0.365079, 1), (1, 1)),
        ((0, 0), (0.365079, 0), (0.746032, 1), (1, 1)),
        ((0, 0), (0.746032, 0), (1, 1)),
    ),
    "jet": (
        ((0, 0), (0.35, 0), (0.66, 1), (0.89, 1), (1, 0.5)),
        ((0, 0), (0.125, 0), (0.375, 1), (0.64, 1), (0.91, 0), (1, 0)),
        ((0, 0.5), (0.11, 1), (0.34, 1), (0.65, 0), (1, 0)),
    ),
}


def png(fig: Figure, tight: bool = False) -> bytes:
    """``tight``: crop to the drawn content, for a figure without ``tight_layout`` (text placed
    outside its axes). matplotlib's ``bbox_inches="tight"`` measures every artist's extent again
    before saving (about 18% of the CPU time of a three-panel report figure: 510 against 428 ms),
    so figures already laid out with ``tight_layout`` skip it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight" if tight else None)
    return buf.getvalue()


def line_panels_png(
    panels: dict[str, dict[str, tuple[Sequence[float], Sequence[float]]]],
    xlabel: str,
    *,
    log_y: Sequence[str] = (),
    log_x: bool = False,
    markers: bool = True,
) -> bytes:
    """One panel per entry of ``panels`` (title -> {label: (xs, ys)}), side by side, as a PNG
    file's bytes (``keel compare --plot curves.png``; the report draws charts.line_panels' SVG)."""
    from matplotlib.figure import Figure

    n = len(panels)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(4.2 * cols, 3.2 * rows))
    for i, (title, series) in enumerate(panels.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        for j, (label, (xs, ys)) in enumerate(series.items()):
            ax.plot(xs, ys, label=label, color=PALETTE[j % len(PALETTE)], marker="o" if markers else None, ms=3)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        if title in log_y:
            ax.set_yscale("log")
        if log_x:
            ax.set_xscale("log")
        ax.grid(alpha=0.3)
        if len(series) > 1 or markers:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return png(fig)


def image_grid(images: np.ndarray, titles: Sequence[str], *, cols: int = 8) -> bytes:
    """``images``: (N, H, W) or (N, H, W, 3) in [0, 1], with a title (may hold newlines) each."""
    cells = [(_rgb(img), title) for img, title in zip(images, titles, strict=True)]
    return mosaic([cells[i : i + cols] for i in range(0, len(cells), cols)])


def explanations(
    images: np.ndarray, maps: dict[str, np.ndarray], titles: Sequence[str], *, overlay: Sequence[str] = ()
) -> bytes:
    """The inputs, then each attribution map (N, H, W) in [0, 1]: one column per example, or
    one row when there is a single example. Maps named in ``overlay`` are drawn over the input
    in the "jet" colour map (Grad-CAM), the others alone in "hot" (saliency)."""
    panels = [[(_rgb(img), title) for img, title in zip(images, titles, strict=True)]]
    for name, values in maps.items():
        if name in overlay:
            row = [(0.55 * _rgb(img) + 0.45 * _colour(v, "jet"), name) for img, v in zip(images, values, strict=True)]
        else:
            row = [(_colour(v, "hot"), name) for v in values]
        panels.append(row)
    if len(images) == 1:
        panels = [[row[0] for row in panels]]
    return mosaic(panels)


def mosaic(rows: Sequence[Sequence[tuple[np.ndarray, str]]], cell: int = 112) -> bytes:
    """Images (H, W, 3) in [0, 1] laid out in rows under their titles, drawn with PIL: a grid
    of dozens of matplotlib axes costs seconds of layout, this costs milliseconds."""
    from PIL import Image, ImageDraw

    font = _font(11)
    lines = max(1 + title.count("\n") for row in rows for _, title in row)
    title_h, pad = 14 * lines + 4, 6
    cols = max(len(row) for row in rows)
    canvas = Image.new("RGB", (cols * (cell + pad) + pad, len(rows) * (cell + title_h + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for r, row in enumerate(rows):
        for c, (image, title) in enumerate(row):
            x, y = pad + c * (cell + pad), pad + r * (cell + title_h + pad)
            draw.multiline_text((x + cell // 2, y), title, fill="black", font=font, anchor="ma", align="center")
            tile = Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8))
            h, w = image.shape[:2]
            scale = cell / max(h, w)
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            # small images (digits) stay crisp pixels; large ones are resampled smoothly
            resample = Image.Resampling.NEAREST if scale >= 2 else Image.Resampling.BILINEAR
            canvas.paste(tile.resize(size, resample), (x + (cell - size[0]) // 2, y + title_h))
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()


def _rgb(image: np.ndarray) -> np.ndarray:
    """(H, W) grey or (H, W, 3) colour -> (H, W, 3)."""
    return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image


@functools.lru_cache(maxsize=8)
def _font(size: int):
    """DejaVu Sans from matplotlib's package data, found without importing matplotlib; PIL's
    own font when it is not there. Looked up once per size (every mosaic asks)."""
    from PIL import ImageFont

    spec = find_spec("matplotlib")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
        if path.is_file():
            return ImageFont.truetype(str(path), size)
    return ImageFont.load_default(size)


def _colour(values: np.ndarray, cmap: str) -> np.ndarray:
    """(...) values in [0, 1] -> (..., 3) RGB in the colour map ``cmap`` ("hot" or "jet")."""
    v = np.clip(values, 0, 1)
    channels = [np.interp(v, [p for p, _ in anchors], [c for _, c in anchors]) for anchors in MAPS[cmap]]
    return np.stack(channels, axis=-1)


def to_display(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) in [0, 1] -> what imshow takes: (N, H, W) grey or (N, H, W, 3) colour."""
    x = np.clip(x, 0, 1)
    return x[:, 0] if x.shape[1] == 1 else np.transpose(x[:, :3], (0, 2, 3, 1))


def token_heat(rows: Sequence[Sequence[str]], values: Sequence[np.ndarray], titles: Sequence[str]) -> bytes:
    """Tokens written left to right, one example per line, each on a colour for its value
    (red positive, blue negative; scaled per example)."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    cmap = colormaps["bwr"]
    width = max(8.0, min(18.0, 0.55 * max(len(r) for r in rows)))
    fig = Figure(figsize=(width, 0.75 * len(rows) + 0.4))
    ax = fig.add_subplot()
    ax.axis("off")
    ax.set_xlim(0, 1)
    ax.set_ylim(len(rows), 0)
    for i, (tokens, v) in enumerate(zip(rows, values, strict=True)):
        scale = float(np.abs(v).max()) or 1.0
        ax.text(0, i + 0.2, titles[i], fontsize=8, color="#444")
        x = 0.0
        for token, value in zip(tokens, v, strict=True):
            step = (len(token) + 1) / (1.6 * width * 5)
            ax.text(
                x, i + 0.65, token, fontsize=8, bbox={"facecolor": cmap(0.5 + 0.5 * value / scale), "pad": 1, "lw": 0}
            )
            x += step
    return png(fig, tight=True)


def matrix_grid(
    mats: Sequence[np.ndarray],
    labels: Sequence[Sequence[str]],
    titles: Sequence[str],
    columns: Sequence[Sequence[str]] | None = None,
) -> bytes:
    """Matrices (e.g. attention: rows queries, columns keys) side by side; ``columns``: the
    column labels when they differ from the rows' (attention over another sentence)."""
    from matplotlib.figure import Figure

    n = len(mats)
    fig = Figure(figsize=(4.2 * n, 4.2))
    for i, (m, lab, title) in enumerate(zip(mats, labels, titles, strict=True)):
        ax = fig.add_subplot(1, n, i + 1)
        ax.imshow(m, cmap="viridis", vmin=0)
        cols = columns[i] if columns is not None else lab
        ax.set_xticks(np.arange(len(cols)), cols, rotation=90, fontsize=6)
        ax.set_yticks(np.arange(len(lab)), lab, fontsize=6)
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return png(fig)
