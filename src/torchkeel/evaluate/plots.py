"""Figures as PNG bytes, drawn with matplotlib's Agg renderer.

Each function builds a ``matplotlib.figure.Figure`` directly (no pyplot): nothing global is
switched, no window opens, and it works on a machine without a display. The report embeds
the bytes as base64; the CLI commands write them to files.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

DPI = 100
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def png(fig: Figure, tight: bool = False) -> bytes:
    """``tight``: crop to the drawn content, for a figure without ``tight_layout`` (text placed
    outside its axes). matplotlib's ``bbox_inches="tight"`` measures every artist's extent again
    before saving (about 18% of the CPU time of a three-panel report figure: 510 against 428 ms),
    so figures already laid out with ``tight_layout`` skip it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight" if tight else None)
    return buf.getvalue()


def line_panels(
    panels: dict[str, dict[str, tuple[Sequence[float], Sequence[float]]]],
    xlabel: str,
    *,
    log_y: Sequence[str] = (),
    log_x: bool = False,
    markers: bool = True,
) -> bytes:
    """One panel per entry of ``panels`` (title -> {label: (xs, ys)}), side by side."""
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


def bars(
    labels: Sequence[str],
    series: dict[str, Sequence[float]],
    title: str,
    *,
    horizontal: bool = False,
    ylabel: str = "",
) -> bytes:
    """Grouped bars: one group per label, one bar per series."""
    n, k = len(labels), len(series)
    size = (6.5, max(2.5, 0.28 * n * max(1, k / 2) + 1)) if horizontal else (max(5.0, 0.45 * n * k + 2), 3.4)
    fig = Figure(figsize=size)
    ax = fig.add_subplot()
    width = 0.8 / k
    pos = np.arange(n)
    for j, (name, values) in enumerate(series.items()):
        offset = pos + (j - (k - 1) / 2) * width
        draw = ax.barh if horizontal else ax.bar
        draw(offset, values, width, label=name, color=PALETTE[j % len(PALETTE)])
    if horizontal:
        ax.set_yticks(pos, labels, fontsize=8)
        ax.invert_yaxis()  # first label on top
        ax.set_xlabel(ylabel)
    else:
        ax.set_xticks(pos, labels, rotation=45 if n > 12 else 0, ha="right" if n > 12 else "center", fontsize=8)
        ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="x" if horizontal else "y")
    if k > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return png(fig)


def histogram(values: dict[str, np.ndarray], title: str, xlabel: str, bins: int = 30) -> bytes:
    fig = Figure(figsize=(5, 3.2))
    ax = fig.add_subplot()
    for j, (name, v) in enumerate(values.items()):
        ax.hist(v, bins=bins, alpha=0.6, label=name, color=PALETTE[j % len(PALETTE)])
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    if len(values) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return png(fig)


def heatmap(matrix: np.ndarray, labels: Sequence[str], title: str) -> bytes:
    """Confusion matrix: colour = share of the row (true class), text = count (up to 20 classes)."""
    counts = np.asarray(matrix, dtype=float)
    rates = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    n = len(labels)
    side = min(12.0, max(4.0, 0.45 * n + 2))
    fig = Figure(figsize=(side + 1, side))
    ax = fig.add_subplot()
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, label="share of true class")
    ticks = np.arange(n) if n <= 40 else np.arange(0, n, max(1, n // 20))
    ax.set_xticks(ticks, [labels[i] for i in ticks], rotation=90 if n > 10 else 0, fontsize=8)
    ax.set_yticks(ticks, [labels[i] for i in ticks], fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    colour = "white" if rates[i, j] > 0.5 else "black"
                    ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=7, color=colour)
    fig.tight_layout()
    return png(fig)


def reliability(count: np.ndarray, confidence: np.ndarray, correct: np.ndarray, ece: float) -> bytes:
    """Reliability diagram (accuracy vs. confidence per bin) above the bins' sizes."""
    bins = len(count)
    edges = np.linspace(0, 1, bins + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    filled = count > 0
    accuracy = np.where(filled, correct / np.maximum(count, 1), 0)
    mean_conf = np.where(filled, confidence / np.maximum(count, 1), 0)
    fig = Figure(figsize=(5, 5.2))
    ax, ax_n = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.bar(centres[filled], accuracy[filled], 1 / bins, edgecolor="black", color=PALETTE[0], label="accuracy")
    gap_bottom = np.minimum(accuracy, mean_conf)[filled]
    gap = np.abs(accuracy - mean_conf)[filled]
    ax.bar(centres[filled], gap, 1 / bins, bottom=gap_bottom, color=PALETTE[3], alpha=0.35, label="gap")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability (ECE {ece:.4f}, {bins} bins)")
    ax.legend(fontsize=8, loc="upper left")
    ax_n.bar(centres, count, 1 / bins, color=PALETTE[7])
    ax_n.set_yscale("log" if count.max() > 50 * max(1, np.median(count[filled])) else "linear")
    ax_n.set_xlabel("confidence")
    ax_n.set_ylabel("examples")
    fig.tight_layout()
    return png(fig)


def scatter_and_residuals(pred: np.ndarray, true: np.ndarray, title: str) -> bytes:
    """Predicted vs. true (with the diagonal) and the residuals' histogram."""
    fig = Figure(figsize=(10, 4))
    ax, ax_r = fig.subplots(1, 2)
    ax.scatter(true, pred, s=6, alpha=0.5, color=PALETTE[0])
    lo, hi = float(min(true.min(), pred.min())), float(max(true.max(), pred.max()))
    ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax.set_xlabel("true")
    ax.set_ylabel("predicted")
    ax.set_title(title)
    residual = pred - true
    ax_r.hist(residual, bins=40, color=PALETTE[1])
    ax_r.axvline(0, color="black", lw=1)
    ax_r.set_xlabel("predicted - true")
    ax_r.set_title(f"Residuals (mean {residual.mean():.3g}, sd {residual.std():.3g})")
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
    from matplotlib import font_manager
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(font_manager.findfont("DejaVu Sans"), 11)
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


def _colour(values: np.ndarray, cmap: str) -> np.ndarray:
    from matplotlib import colormaps

    return colormaps[cmap](np.clip(values, 0, 1))[..., :3]


def to_display(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) in [0, 1] -> what imshow takes: (N, H, W) grey or (N, H, W, 3) colour."""
    x = np.clip(x, 0, 1)
    return x[:, 0] if x.shape[1] == 1 else np.transpose(x[:, :3], (0, 2, 3, 1))


def token_heat(rows: Sequence[Sequence[str]], values: Sequence[np.ndarray], titles: Sequence[str]) -> bytes:
    """Tokens written left to right, one example per line, each on a colour for its value
    (red positive, blue negative; scaled per example)."""
    from matplotlib import colormaps

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
