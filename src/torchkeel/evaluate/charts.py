"""The report's charts as inline SVG: line panels, grouped bars, histograms, the confusion heat
map, the reliability diagram and the regression scatter.

Written out by hand (on evaluate/svg.py) rather than drawn with matplotlib: one chart cost
80-500 ms of matplotlib's layout and rasterising on a 2-core host, and matplotlib's import
another 0.25-0.33 s, which made report.html the largest phase of the default ``keel train``
(benchmarks/RESULTS.md); a chart here costs about a millisecond, and the page gets vector charts
whose text is real text. Each function returns one ``<svg class="chart">`` element.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from torchkeel.evaluate.svg import (
    FONT,
    LEGEND_ROW,
    Canvas,
    Panel,
    Scale,
    category_scale,
    legend_rows,
    num,
    text_width,
    value_scale,
)

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
# ColorBrewer's sequential "Blues" (Brewer, 2003), light to dark, for shares in [0, 1]
BLUES = ("#f7fbff", "#deebf7", "#c6dbef", "#9ecae1", "#6baed6", "#4292c6", "#2171b5", "#08519c", "#08306b")
_BLUES_RGB = np.array([[int(c[k : k + 2], 16) for k in (1, 3, 5)] for c in BLUES])  # parsed once: blues() is per cell
PANEL = (420, 300)  # px, the plot area and its margins of one panel of line_panels


def _colours(n: int) -> list[str]:
    return [PALETTE[j % len(PALETTE)] for j in range(n)]


# ---- the charts


def line_panels(
    panels: dict[str, dict[str, tuple[Sequence[float], Sequence[float]]]],
    xlabel: str,
    *,
    log_y: Sequence[str] = (),
    log_x: bool = False,
    markers: bool = True,
) -> str:
    """One panel per entry of ``panels`` (title -> {label: (xs, ys)}), up to three a row."""
    cols = min(len(panels), 3) or 1
    scales = []
    for title, series in panels.items():
        xs = [float(v) for s in series.values() for v in s[0]]
        ys = [float(v) for s in series.values() for v in s[1]]
        scales.append((value_scale(xs, log=log_x), value_scale(ys, log=title in log_y)))
    left = max((max(text_width(s) for s in y.labels) for _, y in scales), default=20) + 30
    width = PANEL[0] - left - 12
    colours = {title: list(zip(series, _colours(len(series)), strict=True)) for title, series in panels.items()}
    rows = max((len(legend_rows(entries, width)) for entries in colours.values()), default=1)
    extra = LEGEND_ROW * max(0, rows - 1)  # more legend rows: the plots start lower
    height = PANEL[1] - 90 - extra
    canvas = Canvas(cols * PANEL[0], math.ceil(len(panels) / cols) * PANEL[1])
    for i, ((title, series), (xs, ys)) in enumerate(zip(panels.items(), scales, strict=True)):
        ox, oy = (i % cols) * PANEL[0], (i // cols) * PANEL[1]
        panel = Panel(canvas, ox + left, oy + 50 + extra, width, height, xs, ys)
        panel.frame(title=title, xlabel=xlabel, entries=colours[title])
        for (name, (x, y)), (_, colour) in zip(series.items(), colours[title], strict=True):
            panel.line([float(v) for v in x], [float(v) for v in y], colour, markers=markers, name=name)
    return canvas.svg(", ".join(panels))


def bars(
    labels: Sequence[str],
    series: dict[str, Sequence[float]],
    title: str,
    *,
    horizontal: bool = False,
    ylabel: str = "",
) -> str:
    """Grouped bars: one group per label, one bar per series; values from 0."""
    n, k = len(labels), max(1, len(series))
    cats = category_scale(labels)
    values = value_scale([float(v) for s in series.values() for v in s], zero=True)
    colours = _colours(len(series))
    entries = list(zip(series, colours, strict=True)) if len(series) > 1 else []
    if horizontal:
        left = max((text_width(s) for s in cats.labels), default=20) + 14
        width, height = 460, max(120, 22 * n * max(1, k / 2))
        canvas = Canvas(left + width + 24, height + 84)
        panel = Panel(canvas, left, 50, width, height, values, cats, flip_y=True)
        panel.frame(title=title, xlabel=ylabel, grid="x", entries=entries)
    else:
        rotate = 45 if n > 12 else 0
        left = max(text_width(s) for s in values.labels) + (30 if ylabel else 14)
        width = max(320, 34 * n * max(1, k / 2))
        bottom = cats.room_below(rotate) + 8
        left = max(left, cats.overhang(rotate, width) + 4)  # the first rotated label stays on the canvas
        canvas = Canvas(left + width + 16, 50 + 230 + bottom)
        panel = Panel(canvas, left, 50, width, 230, cats, values)
        panel.frame(title=title, ylabel=ylabel, grid="y", rotate_x=rotate, entries=entries)
    bar = 0.8 / k
    for j, ((name, vs), colour) in enumerate(zip(series.items(), colours, strict=True)):
        for i, v in enumerate(vs):
            v = float(v)
            if not math.isfinite(v):
                continue
            a = i + (j - (k - 1) / 2) * bar - bar / 2
            tip = f"{labels[i]}, {name}: {v:g}"
            if horizontal:
                panel.rect(0.0, v, a, a + bar, colour, tip, class_="bar", data_value=f"{v:g}")
            else:
                panel.rect(a, a + bar, 0.0, v, colour, tip, class_="bar", data_value=f"{v:g}")
    return canvas.svg(title)


def histogram(
    values: dict[str, np.ndarray], title: str, xlabel: str, bins: int | Sequence[float] | np.ndarray = 30
) -> str:
    """Counts per bin, the bins shared by every series (so they compare bar by bar)."""
    arrays = {name: np.asarray(v, dtype=float) for name, v in values.items()}
    finite = {name: v[np.isfinite(v)] for name, v in arrays.items()}
    everything = np.concatenate([v for v in finite.values()] or [np.zeros(0)])
    if isinstance(bins, int):
        lo, hi = (float(everything.min()), float(everything.max())) if everything.size else (0.0, 1.0)
        hi = hi if hi > lo else lo + max(1.0, abs(lo) * 1e-9)
        edges = np.linspace(lo / 2, hi / 2, bins + 1) * 2  # halved: the span of +-1e308 stays finite
    else:
        edges = np.asarray(bins, dtype=float)
    counts = {name: np.histogram(v, edges)[0] for name, v in finite.items()}
    xs = value_scale([float(edges[0]), float(edges[-1])])
    ys = value_scale([float(c.max()) if c.size else 0.0 for c in counts.values()], zero=True)
    left = max(text_width(s) for s in ys.labels) + 30
    canvas = Canvas(left + 400, 320)
    panel = Panel(canvas, left, 50, 390, 220, xs, ys)
    colours = _colours(len(counts))
    entries = list(zip(counts, colours, strict=True)) if len(counts) > 1 else []
    panel.frame(title=title, xlabel=xlabel, ylabel="count", grid="y", entries=entries)
    for (_, c), colour in zip(counts.items(), colours, strict=True):
        for a, b, count in zip(edges[:-1], edges[1:], c, strict=True):
            if count:
                panel.rect(float(a), float(b), 0.0, float(count), colour, f"{a:.3g}-{b:.3g}: {count}",
                           fill_opacity="0.6", class_="bar")  # fmt: skip
    return canvas.svg(title)


def blues(share: float) -> str:
    """A share in [0, 1] as a colour of the Blues ramp (linear between its nine steps)."""
    f = min(1.0, max(0.0, share)) * (len(BLUES) - 1)
    i = min(int(f), len(BLUES) - 2)
    a, b = _BLUES_RGB[i], _BLUES_RGB[i + 1]
    r, g, bl = (a + (b - a) * (f - i)).round().astype(int)
    return f"#{r:02x}{g:02x}{bl:02x}"


def heatmap(matrix: np.ndarray, labels: Sequence[str], title: str) -> str:
    """Confusion matrix: colour = share of the row (true class), text = count (up to 20 classes)."""
    counts = np.asarray(matrix, dtype=float)
    rates = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    n = len(labels)
    cell = min(40.0, max(6.0, 560 / max(n, 1)))
    shown = list(range(n)) if n <= 40 else list(range(0, n, max(1, n // 20)))
    names = [str(labels[i]) for i in shown]
    classes = Scale(-0.5, n - 0.5, [float(i) for i in shown], names)  # both axes
    left = max((text_width(s) for s in names), default=10) + 34
    rotate = 90 if n > 10 else 0
    side = cell * n
    canvas = Canvas(left + side + 90, 40 + side + classes.room_below(rotate) + 12)
    panel = Panel(canvas, left, 40, side, side, classes, classes, flip_y=True)
    for i in range(n):
        for j in range(n):
            tip = f"true {labels[i]}, predicted {labels[j]}: {int(counts[i, j])}"
            panel.rect(j - 0.5, j + 0.5, i - 0.5, i + 0.5, blues(rates[i, j]), tip, class_="cell")
            if n <= 20 and counts[i, j]:
                colour = "white" if rates[i, j] > 0.5 else "black"
                size = min(FONT - 1, cell / 2.6, 1.6 * cell / len(str(int(counts[i, j]))))  # fits its cell
                canvas.text(panel.px(j), panel.py(i) + size * 0.35, str(int(counts[i, j])), size=size,
                            anchor="middle", fill=colour, class_="count")  # fmt: skip
    panel.frame(title=title, xlabel="predicted", ylabel="true", grid="", rotate_x=rotate)
    # the colour bar: the ramp from 0 (bottom) to 1 (top)
    bar_x, steps = left + side + 16, 50
    for s in range(steps):
        y = 40 + side * (1 - (s + 1) / steps)
        canvas.add(f'<rect x="{num(bar_x)}" y="{num(y)}" width="12" height="{num(side / steps + 0.5)}" '
                   f'fill="{blues((s + 0.5) / steps)}"/>')  # fmt: skip
    for t in (0.0, 0.5, 1.0):
        canvas.text(bar_x + 16, 40 + side * (1 - t) + 4, f"{t:g}", size=FONT - 1)
    canvas.text(bar_x + 46, 40 + side / 2, "share of true class", size=FONT - 1, anchor="middle", rotate=-90)
    return canvas.svg(title)


def reliability(count: np.ndarray, confidence: np.ndarray, correct: np.ndarray, ece: float) -> str:
    """Reliability diagram (accuracy vs. confidence per bin) above the bins' sizes."""
    bins = len(count)
    edges = np.linspace(0, 1, bins + 1)
    filled = count > 0
    accuracy = np.where(filled, correct / np.maximum(count, 1), 0)
    mean_conf = np.where(filled, confidence / np.maximum(count, 1), 0)
    unit = Scale(0.0, 1.0, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0], ["0", "0.2", "0.4", "0.6", "0.8", "1"])
    skewed = count.max() > 50 * max(1, np.median(count[filled])) if filled.any() else False
    shown = [float(c) for c in count[filled]] or [1.0]
    # on a log axis the bars start a decade below the smallest count, so a bin of 1 shows
    sizes = value_scale([*shown, min(shown) / 10] if skewed else shown, log=bool(skewed), zero=not skewed)
    left = max(text_width(s) for s in sizes.labels) + 34
    canvas = Canvas(left + 400, 470)
    top = Panel(canvas, left, 50, 380, 250, unit, unit)
    entries = [("accuracy", PALETTE[0]), ("gap", PALETTE[3]), ("perfect calibration", "black")]
    top.frame(title=f"Reliability (ECE {ece:.4f}, {bins} bins)", ylabel="accuracy", entries=entries)
    for i in np.flatnonzero(filled):
        a, b = float(edges[i]), float(edges[i + 1])
        top.rect(a, b, 0.0, float(accuracy[i]), PALETTE[0], stroke="black", stroke_width="0.6", class_="bar")
        lo, hi = sorted((float(accuracy[i]), float(mean_conf[i])))
        top.rect(a, b, lo, hi, PALETTE[3], fill_opacity="0.35", class_="gap")
    top.line([0.0, 1.0], [0.0, 1.0], "black", markers=False, dash="5 3")
    lower = Panel(canvas, left, 320, 380, 90, unit, sizes)
    lower.frame(xlabel="confidence", ylabel="examples", grid="y")
    floor = sizes.lo
    for i in np.flatnonzero(filled):
        lower.rect(float(edges[i]), float(edges[i + 1]), floor, float(count[i]), PALETTE[7], class_="bar")
    return canvas.svg("reliability diagram")


def scatter_and_residuals(pred: np.ndarray, true: np.ndarray, title: str) -> str:
    """Predicted vs. true (with the diagonal) and the residuals' histogram; at most 5,000
    points are drawn (evenly spaced through the test split), the histogram counts them all."""
    pred, true = np.asarray(pred, dtype=float).ravel(), np.asarray(true, dtype=float).ravel()
    finite = np.isfinite(pred) & np.isfinite(true)  # a NaN prediction is left out, not plotted at "nan"
    pred, true = pred[finite], true[finite]
    if not len(pred):
        pred = true = np.zeros(1)
    keep = np.linspace(0, len(pred) - 1, min(len(pred), 5000)).round().astype(int)
    lo, hi = float(min(true.min(), pred.min())), float(max(true.max(), pred.max()))
    both = value_scale([lo, hi])
    left = max(text_width(s) for s in both.labels) + 34
    canvas = Canvas(2 * (left + 360), 330)
    panel = Panel(canvas, left, 40, 340, 240, both, both)
    shown = title if len(keep) == len(pred) else f"{title} ({len(keep):,} of {len(pred):,} shown)"
    panel.frame(title=shown, xlabel="true", ylabel="predicted")
    dots = "".join(f'<circle cx="{num(panel.px(true[i]))}" cy="{num(panel.py(pred[i]))}" r="1.8"/>' for i in keep)
    canvas.add(f'<g fill="{PALETTE[0]}" fill-opacity="0.5">{dots}</g>')
    panel.line([lo, hi], [lo, hi], "black", markers=False, dash="5 3")
    residual = pred - true
    counts, edges = np.histogram(residual, 40)
    xs, ys = value_scale([float(edges[0]), float(edges[-1]), 0.0]), value_scale([float(counts.max())], zero=True)
    right = Panel(canvas, 2 * left + 360, 40, 340, 240, xs, ys)
    right.frame(title=f"Residuals (mean {residual.mean():.3g}, sd {residual.std():.3g})", xlabel="predicted - true")
    for a, b, c in zip(edges[:-1], edges[1:], counts, strict=True):
        if c:
            right.rect(float(a), float(b), 0.0, float(c), PALETTE[1], class_="bar")
    right.line([0.0, 0.0], [ys.lo, ys.hi], "black", markers=False)
    return canvas.svg(title)
