"""SVG drawing for the report's charts: nice ticks, linear/log/category scales, a canvas and a
plot panel that maps data to pixels and draws its frame, ticks, title, labels and legend.

Axis ticks are "nice numbers" (Heckbert, Graphics Gems, 1990: steps of 1, 2 or 5 times a power
of ten, the axis extended to whole steps); a log axis ticks the powers of ten it spans. Text
widths are estimated (``CHAR`` px per character at the font size) to size the margins, so long
labels get room without a measuring pass. Values that are not finite are left out (a line
breaks there).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

FONT = 11  # px, tick labels and legends
CHAR = 0.6 * FONT  # estimated mean width of a character of a sans-serif face at FONT px
MAX_POINTS = 4000  # per line: longer series are thinned evenly (a step log of a long run)


# ---- scales and ticks


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Ticks of steps 1, 2 or 5 x 10^k from a whole step at or below ``lo`` to one at or above ``hi``."""
    if hi < lo:
        lo, hi = hi, lo
    if hi - lo <= 1e-9 * max(abs(lo), abs(hi)):  # one value (up to float noise): a range around it
        pad = abs(lo) * 0.1 or 0.5
        lo, hi = lo - pad, hi + pad
    if not math.isfinite(hi - lo):  # a range past the largest float: its two ends, unrounded
        return [lo, hi]
    step = _nice((hi - lo) / max(1, count - 1))
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [_clean(i * step) for i in range(first, last + 1)]


def _nice(x: float) -> float:
    exponent = math.floor(math.log10(x))
    fraction = x / 10**exponent
    nice = 1 if fraction < 1.5 else 2 if fraction < 3 else 5 if fraction < 7 else 10
    return nice * 10.0**exponent


def _clean(v: float) -> float:
    return float(f"{v:.12g}")  # 0.30000000000000004 -> 0.3


def log_ticks(lo: float, hi: float) -> list[float]:
    """Powers of ten from the one at or below ``lo`` to the one at or above ``hi`` (> 0)."""
    first, last = math.floor(math.log10(lo) + 1e-9), math.ceil(math.log10(hi) - 1e-9)
    last = max(last, first + 1)
    return [10.0**k for k in range(first, last + 1)]


@dataclass
class Scale:
    """Data to a fraction of the axis: [lo, hi] -> [0, 1], linear or log; ``labels`` per tick."""

    lo: float
    hi: float
    ticks: list[float]
    labels: list[str]
    log: bool = False

    def frac(self, v: float) -> float:
        if self.log:
            return (math.log10(v) - math.log10(self.lo)) / (math.log10(self.hi) - math.log10(self.lo))
        return (v - self.lo) / (self.hi - self.lo)

    def room_below(self, rotate: int) -> float:
        """Pixels under an x axis of this scale for its tick labels and the axis label."""
        if rotate:
            return max((text_width(s) for s in self.labels), default=0) * math.sin(math.radians(rotate)) + 22
        return 2 * FONT + 10

    def overhang(self, rotate: int, width: float) -> float:
        """How far the first rotated tick label reaches left of an x axis ``width`` px long."""
        if not rotate or not self.labels:
            return 0.0
        return text_width(self.labels[0]) * math.cos(math.radians(rotate)) - self.frac(self.ticks[0]) * width


def value_scale(values: Sequence[float], *, log: bool = False, zero: bool = False) -> Scale:
    """A numeric axis covering the finite ``values`` (and 0 when ``zero``); log keeps the
    positive ones (a linear axis when there are none)."""
    v = np.asarray([x for x in values if math.isfinite(x)], dtype=float)
    if log:
        v = v[v > 0]
        if v.size:
            ticks = log_ticks(float(v.min()), float(v.max()))
            return Scale(ticks[0], ticks[-1], ticks, [f"{t:g}" for t in ticks], log=True)
    lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 1.0)
    if zero:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        if lo == hi == 0.0:  # nothing but zeros: counts of nothing read 0 to 1, not -0.5 to 0.5
            hi = 1.0
    ticks = nice_ticks(lo, hi)
    return Scale(ticks[0], ticks[-1], ticks, tick_labels(ticks))


def category_scale(labels: Sequence[str]) -> Scale:
    n = len(labels)
    return Scale(-0.5, n - 0.5, [float(i) for i in range(n)], [str(x) for x in labels])


def tick_labels(ticks: Sequence[float]) -> list[str]:
    """The same number of decimals on every tick, as many as the step needs."""
    step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else 1.0
    biggest = max(abs(t) for t in ticks)
    if biggest >= 1e6 or 0 < biggest < 1e-3:  # scientific, with the digits the step needs
        ratio = biggest / step if step and math.isfinite(step) else 1.0
        digits = max(2, math.ceil(math.log10(max(ratio, 1.0)) + 1e-9) + 1)
        return [f"{t:.{digits}g}" for t in ticks]
    decimals = next((d for d in range(12) if abs(round(step, d) - step) <= 1e-9 * step), 12)
    return [f"{t:,.{decimals}f}" for t in ticks]


# ---- drawing


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def attributes(attrs: dict) -> str:
    """Keyword arguments as SVG attributes: ``class_`` -> class, ``fill_opacity`` -> fill-opacity."""
    return "".join(f' {k.rstrip("_").replace("_", "-")}="{esc(v)}"' for k, v in attrs.items())


def num(v: float) -> str:
    """A coordinate with at most one decimal (the SVG stays small)."""
    return f"{v:.1f}".rstrip("0").rstrip(".")


def text_width(text: str, size: float = FONT) -> float:
    return max((len(line) for line in str(text).split("\n")), default=0) * CHAR * size / FONT


@dataclass
class Canvas:
    """An SVG being written: elements appended as strings, closed by ``svg()``."""

    width: float
    height: float
    parts: list[str] = field(default_factory=list)

    def add(self, element: str) -> None:
        self.parts.append(element)

    def text(
        self, x: float, y: float, content: str, *, size: float = FONT, anchor: str = "start", rotate: float = 0, **attrs
    ) -> None:
        """``rotate``: degrees clockwise about (x, y) (-90: reads bottom to top)."""
        at = f'x="{num(x)}" y="{num(y)}" font-size="{num(size)}" text-anchor="{anchor}"'
        if rotate:
            attrs = {"transform": f"rotate({num(rotate)} {num(x)} {num(y)})", **attrs}
        self.add(f"<text {at}{attributes(attrs)}>{esc(content)}</text>")

    def svg(self, label: str) -> str:
        w, h = math.ceil(self.width), math.ceil(self.height)
        head = (
            f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
            f'role="img" aria-label="{esc(label)}" font-family="DejaVu Sans, Verdana, Arial, sans-serif">'
            f'<title>{esc(label)}</title><rect width="{w}" height="{h}" fill="white"/>'
        )
        return head + "".join(self.parts) + "</svg>"


@dataclass
class Panel:
    """One plot area at (left, top) of ``width`` x ``height`` px on a canvas, with its scales."""

    canvas: Canvas
    left: float
    top: float
    width: float
    height: float
    x: Scale
    y: Scale
    flip_y: bool = False  # categories from the top down (horizontal bars, heat maps)

    def px(self, v: float) -> float:
        return self.left + self.x.frac(v) * self.width

    def py(self, v: float) -> float:
        f = self.y.frac(v)
        return self.top + (f if self.flip_y else 1 - f) * self.height

    def frame(
        self,
        *,
        title: str = "",
        xlabel: str = "",
        ylabel: str = "",
        grid: str = "xy",
        rotate_x: int = 0,
        entries: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Grid, box, ticks, title and axis labels; ``entries`` (name, colour): a legend in rows
        between the title and the plot, so it never covers the data."""
        c, bottom, right = self.canvas, self.top + self.height, self.left + self.width
        for y in [self.py(t) for t in self.y.ticks] if "y" in grid else []:
            c.add(f'<line x1="{num(self.left)}" y1="{num(y)}" x2="{num(right)}" y2="{num(y)}" stroke="#e5e5e5"/>')
        for x in [self.px(t) for t in self.x.ticks] if "x" in grid else []:
            c.add(f'<line x1="{num(x)}" y1="{num(self.top)}" x2="{num(x)}" y2="{num(bottom)}" stroke="#e5e5e5"/>')
        c.add(
            f'<rect x="{num(self.left)}" y="{num(self.top)}" width="{num(self.width)}" height="{num(self.height)}" '
            'fill="none" stroke="#444"/>'
        )
        for t, label in zip(self.y.ticks, self.y.labels, strict=True):
            c.text(self.left - 5, self.py(t) + FONT * 0.35, label, anchor="end", class_="ytick")
        for t, label in zip(self.x.ticks, self.x.labels, strict=True):
            if rotate_x:
                c.text(self.px(t), bottom + 8, label, anchor="end", rotate=-rotate_x, class_="xtick",
                       dominant_baseline="middle")  # fmt: skip
            else:
                c.text(self.px(t), bottom + FONT + 3, label, anchor="middle", class_="xtick")
        rows = legend_rows(entries, self.width)
        for i, row in enumerate(rows):  # the last row just above the plot
            legend(c, self.left, self.top - 8 - LEGEND_ROW * (len(rows) - 1 - i), row, width=self.width)
        if title:
            y = self.top - 8 - (18 + LEGEND_ROW * (len(rows) - 1) if rows else 0)
            c.text(self.left + self.width / 2, y, title, size=FONT + 1, anchor="middle", font_weight="bold")
        if xlabel:
            c.text(self.left + self.width / 2, bottom + self.x.room_below(rotate_x), xlabel, anchor="middle")
        if ylabel:
            room = max((text_width(s) for s in self.y.labels), default=0) + 6
            c.text(self.left - room - 8, self.top + self.height / 2, ylabel, anchor="middle", rotate=-90)

    def line(
        self, xs: Sequence[float], ys: Sequence[float], colour: str, *, markers: bool, dash: str = "", name: str = ""
    ) -> None:
        """A polyline through the finite points, broken where a value is not finite; its markers
        carry the point's values as a tooltip (``name``: the series, first in the tooltip)."""
        step = max(1, math.ceil(len(xs) / MAX_POINTS))
        runs, run = [], []
        for x, y in zip(xs[::step], ys[::step], strict=True):
            if math.isfinite(x) and math.isfinite(y) and (not self.y.log or y > 0) and (not self.x.log or x > 0):
                run.append((x, y))
            elif run:
                runs.append(run)
                run = []
        runs += [run] if run else []
        style = f' stroke-dasharray="{dash}"' if dash else ""
        prefix = f"{name}: " if name else ""
        for r in runs:
            points = " ".join(f"{num(self.px(x))},{num(self.py(y))}" for x, y in r)
            self.canvas.add(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="1.5"{style}/>')
            if (markers and len(xs) <= 200) or len(r) == 1:  # a lone point is drawn as one
                self.canvas.add(
                    "".join(
                        f'<circle cx="{num(self.px(x))}" cy="{num(self.py(y))}" r="2.5" fill="{colour}">'
                        f"<title>{esc(f'{prefix}{x:g}, {y:.4g}')}</title></circle>"
                        for x, y in r
                    )
                )

    def rect(self, x0: float, x1: float, y0: float, y1: float, colour: str, tip: str = "", **attrs) -> None:
        """A rectangle between data coordinates (x0, y0) and (x1, y1); ``tip``: its tooltip."""
        (a, b), (c, d) = sorted((self.px(x0), self.px(x1))), sorted((self.py(y0), self.py(y1)))
        shape = f'<rect x="{num(a)}" y="{num(c)}" width="{num(b - a)}" height="{num(d - c)}" fill="{colour}"'
        shape += attributes(attrs)
        self.canvas.add(f"{shape}><title>{esc(tip)}</title></rect>" if tip else f"{shape}/>")


LEGEND_ROW = 14  # px between legend rows


def legend_rows(entries: Sequence[tuple[str, str]], width: float) -> list[list[tuple[str, str]]]:
    """The entries in rows that each fit in ``width`` px (one row per entry at worst)."""
    rows: list[list[tuple[str, str]]] = [[]]
    used = 0.0
    for entry in entries:
        size = _entry_width(entry[0])
        if rows[-1] and used + size > width:
            rows.append([])
            used = 0.0
        rows[-1].append(entry)
        used += size
    return rows if rows[0] else []


def _entry_width(name: str) -> float:
    return 16 + text_width(name, FONT - 1) + 14


def legend(canvas: Canvas, x: float, y: float, entries: Sequence[tuple[str, str]], width: float = 0) -> None:
    """Swatches and names in one row from (x, y) rightwards (above a panel, never over its data);
    a name wider than ``width`` on its own is cut with an ellipsis, its full text the tooltip."""
    room = (width - 30) / (CHAR * (FONT - 1) / FONT) if width else float("inf")
    for name, colour in entries:
        shown = name if len(name) <= room else name[: max(1, int(room) - 1)] + "\u2026"
        swatch = f'<rect x="{num(x)}" y="{num(y - 8)}" width="12" height="8" fill="{colour}"/>'
        canvas.add(f"<g><title>{esc(name)}</title>{swatch}")
        canvas.text(x + 16, y, shown, size=FONT - 1, class_="legend")
        canvas.add("</g>")
        x += _entry_width(shown)
