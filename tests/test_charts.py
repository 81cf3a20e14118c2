"""The report's SVG charts (evaluate/svg.py, evaluate/charts.py): nice ticks, and every chart read
back from its SVG: the points and bars sit where their values say on the axes the chart labels,
values that are not finite break a line instead of breaking the chart, text is escaped, and the
saliency colour maps match matplotlib's without importing it."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from torchkeel.evaluate import charts, plots
from torchkeel.evaluate.svg import FONT, log_ticks, nice_ticks, tick_labels, value_scale

SVG = "{http://www.w3.org/2000/svg}"


def _parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)  # well-formed XML, or this raises
    assert root.tag == f"{SVG}svg" and root.get("class") == "chart"
    return root


def _ticks(root: ET.Element, axis: str) -> list[tuple[float, float]]:
    """(value, pixel) of each tick label of ``axis`` ('x' or 'y'): the chart's own scale."""
    out = []
    for t in root.iter(f"{SVG}text"):
        if t.get("class") == f"{axis}tick":
            value = float(t.text.replace(",", ""))
            pixel = float(t.get("x")) if axis == "x" else float(t.get("y")) - FONT * 0.35
            out.append((value, pixel))
    return out


def _inverse(ticks: list[tuple[float, float]]):
    """Pixel -> value, fitted through the tick labels (a linear axis)."""
    (v0, p0), (v1, p1) = ticks[0], ticks[-1]
    return lambda p: v0 + (p - p0) * (v1 - v0) / (p1 - p0)


@pytest.mark.parametrize("seed", range(40))
def test_nice_ticks_cover_the_range_in_steps_of_one_two_or_five(seed):
    rng = np.random.default_rng(seed)
    lo = float(rng.normal() * 10.0 ** rng.integers(-4, 6))
    hi = lo + float(abs(rng.normal()) * 10.0 ** rng.integers(-4, 6)) + 1e-9
    ticks = nice_ticks(lo, hi)
    assert ticks[0] <= lo and ticks[-1] >= hi
    steps = np.diff(ticks)
    assert np.allclose(steps, steps[0], rtol=1e-6)
    mantissa = steps[0] / 10 ** math.floor(math.log10(steps[0]))
    assert min(abs(mantissa - m) for m in (1, 2, 5, 10)) < 1e-6, steps[0]
    assert 2 <= len(ticks) <= 11, ticks
    labels = tick_labels(ticks)
    assert len(set(labels)) == len(labels), labels  # distinct: enough decimals for the step


def test_ticks_of_one_value_and_of_a_log_axis():
    assert nice_ticks(3.0, 3.0)[0] < 3.0 < nice_ticks(3.0, 3.0)[-1]
    assert nice_ticks(0.0, 0.0)[0] < 0.0 < nice_ticks(0.0, 0.0)[-1]
    # a metric at 1.0 every epoch but for float noise (a val accuracy of 1, an AUC): distinct ticks
    noisy = nice_ticks(1.0, 1.0 + 1e-12)
    assert len(set(noisy)) == len(noisy) > 1 and noisy[0] < 1.0 < noisy[-1]
    assert value_scale([1.0, 1.0 + 1e-12]).frac(1.0) == pytest.approx(0.5)
    assert log_ticks(0.003, 250.0) == [1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0]
    assert tick_labels([0.0, 0.25, 0.5]) == ["0.00", "0.25", "0.50"]
    assert tick_labels([0, 5000, 10000]) == ["0", "5,000", "10,000"]
    assert value_scale([0.0, 0.0], zero=True).ticks[0] == 0.0  # all zeros: the axis starts at 0


def test_a_line_chart_puts_every_point_where_its_value_is_on_the_labelled_axes():
    xs = list(range(1, 13))
    train = [2.1 * 0.6**i for i in range(12)]
    val = [1.5 * 0.7**i + 0.05 for i in range(12)]
    root = _parse(charts.line_panels({"loss": {"train": (xs, train), "val": (xs, val)}}, "epoch"))
    to_x, to_y = _inverse(_ticks(root, "x")), _inverse(_ticks(root, "y"))
    lines = root.findall(f".//{SVG}polyline")
    assert len(lines) == 2
    for line, ys in zip(lines, (train, val), strict=True):
        points = [tuple(map(float, p.split(","))) for p in line.get("points").split()]
        assert [to_x(px) for px, _ in points] == pytest.approx(xs, abs=0.05)
        assert [to_y(py) for _, py in points] == pytest.approx(ys, abs=0.01)
    legend = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "legend"]
    assert legend == ["train", "val"]
    tips = [c.find(f"{SVG}title").text for c in root.iter(f"{SVG}circle")]  # each marker's values
    assert len(tips) == 24 and tips[0] == "train: 1, 2.1" and tips[12] == f"val: 1, {val[0]:.4g}"


def test_values_that_are_not_finite_break_the_line():
    ys = [1.0, 0.8, float("nan"), 0.5, float("inf"), 0.3, 0.2]
    root = _parse(charts.line_panels({"loss": {"train": (list(range(7)), ys)}}, "step", markers=False))
    counts = [len(line.get("points").split()) for line in root.findall(f".//{SVG}polyline")]
    assert counts == [2, 1, 2]
    assert len(root.findall(f".//{SVG}circle")) == 1  # the point between the gaps, drawn as a dot
    _parse(charts.line_panels({"empty": {"train": ([], [])}}, "step"))  # nothing to draw still draws axes


def test_a_log_axis_places_values_by_their_logarithm():
    xs, ys = [0, 1, 2, 3], [1000.0, 100.0, 10.0, 1.0]
    root = _parse(charts.line_panels({"perplexity": {"val": (xs, ys)}}, "step", log_y=["perplexity"]))
    ticks = _ticks(root, "y")
    assert [v for v, _ in ticks] == [1.0, 10.0, 100.0, 1000.0]
    log_y = _inverse([(math.log10(v), p) for v, p in ticks])
    points = [tuple(map(float, p.split(","))) for p in root.find(f".//{SVG}polyline").get("points").split()]
    assert [10 ** log_y(py) for _, py in points] == pytest.approx(ys, rel=0.02)


@pytest.mark.parametrize("horizontal", [False, True])
def test_bars_have_the_lengths_of_their_values(horizontal):
    labels = [f"class {i}" for i in range(5)]
    series = {"precision": [0.9, 0.5, 0.75, 1.0, 0.2], "recall": [0.8, 0.6, 0.7, 0.95, 0.1]}
    root = _parse(charts.bars(labels, series, "Per-class scores", horizontal=horizontal))
    bars = [r for r in root.iter(f"{SVG}rect") if r.get("class") == "bar"]
    values = [float(r.get("data-value")) for r in bars]
    assert values == series["precision"] + series["recall"]
    length = [float(r.get("width" if horizontal else "height")) for r in bars]
    per_unit = np.array(length) / np.array(values)
    assert np.allclose(per_unit, per_unit[0], rtol=0.02)  # one scale for every bar, from 0
    assert [r.find(f"{SVG}title").text for r in bars[:2]] == ["class 0, precision: 0.9", "class 1, precision: 0.5"]


def test_text_is_escaped_and_many_categories_are_rotated():
    labels = ['<b>"a" & b</b>', *[f"c{i}" for i in range(14)]]
    svg = charts.bars(labels, {"n": list(range(15))}, "Counts <per> class", ylabel="examples")
    root = _parse(svg)
    assert '<b>"a"' not in svg and "&lt;b&gt;&quot;a&quot; &amp; b&lt;/b&gt;" in svg
    xticks = [t for t in root.iter(f"{SVG}text") if t.get("class") == "xtick"]
    assert len(xticks) == 15 and all("rotate(-45" in t.get("transform") for t in xticks)


def test_a_histogram_counts_every_finite_value_in_shared_bins():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 500), rng.normal(1, 1, 300)
    b[:5] = np.nan
    root = _parse(charts.histogram({"a": a, "b": b}, "values", "x", bins=20))
    bars = [r for r in root.iter(f"{SVG}rect") if r.get("class") == "bar"]
    counts = [int(r.find(f"{SVG}title").text.rsplit(": ", 1)[1]) for r in bars]
    assert sum(counts) == 500 + 295


def test_the_confusion_heat_map_has_a_cell_per_pair_darker_for_larger_shares():
    cm = np.array([[8, 2, 0], [1, 9, 0], [0, 5, 5]])
    root = _parse(charts.heatmap(cm, ["cat", "dog", "bird"], "Confusion"))
    cells = [r for r in root.iter(f"{SVG}rect") if r.get("class") == "cell"]
    assert len(cells) == 9
    shares = (cm / cm.sum(1, keepdims=True)).ravel()
    light = [sum(int(r.get("fill")[k : k + 2], 16) for k in (1, 3, 5)) for r in cells]
    order = np.argsort(shares, kind="stable")
    assert all(light[i] >= light[j] for i, j in zip(order, order[1:], strict=False))
    counts = sorted(int(t.text) for t in root.iter(f"{SVG}text") if t.get("class") == "count")
    assert counts == sorted(int(v) for v in cm.ravel() if v)  # the non-zero counts, written in their cells
    assert charts.blues(0.0) == charts.BLUES[0] and charts.blues(1.0) == charts.BLUES[-1]


def test_reliability_and_regression_charts_draw():
    count = np.array([0, 0, 3, 10, 200])
    root = _parse(charts.reliability(count, count * np.array([0, 0, 0.5, 0.7, 0.95]), count * 0.8, 0.05))
    assert len([r for r in root.iter(f"{SVG}rect") if r.get("class") == "bar"]) == 2 * 3  # filled bins, twice
    rng = np.random.default_rng(1)
    true = rng.normal(size=6000)
    root = _parse(charts.scatter_and_residuals(true + rng.normal(0, 0.1, 6000), true, "Predicted vs true"))
    assert len(root.findall(f".//{SVG}circle")) == 5000
    assert any("5,000 of 6,000 shown" in (t.text or "") for t in root.iter(f"{SVG}text"))


@pytest.mark.parametrize("name", ["hot", "jet"])
def test_the_saliency_colour_maps_match_matplotlibs(name):
    from matplotlib import colormaps

    v = np.linspace(0, 1, 256)
    assert np.abs(plots._colour(v, name) - colormaps[name](v)[:, :3]).max() < 1.5 / 255


def test_edge_inputs_from_review():
    """Cases that once broke or hid things: NaN predictions, ticks near 1e6 with a small step,
    a log count axis whose smallest bin is 1, 7-digit counts in small cells, rotated labels at
    the left edge, and legends too long for one row."""
    root = _parse(charts.scatter_and_residuals(np.array([1.0, np.nan, 2.5]), np.array([1.0, 2.0, 3.0]), "t"))
    assert len(root.findall(f".//{SVG}circle")) == 2 and "nan" not in ET.tostring(root, encoding="unicode")
    _parse(charts.histogram({"huge": np.array([-1e308, 1e308, 0.0])}, "t", "x"))
    _parse(charts.line_panels({"huge": {"a": ([0, 1], [-1e308, 1e308])}}, "x"))
    labels = tick_labels(nice_ticks(1e6, 1e6 + 10))
    assert len(set(labels)) == len(labels), labels
    count = np.array([1000, 1, 1, 0, 0])
    root = _parse(charts.reliability(count, count * 0.9, count * 0.9, 0.0))
    heights = [float(r.get("height")) for r in root.iter(f"{SVG}rect") if r.get("class") == "bar"]
    assert len(heights) == 6 and min(heights) > 0  # three accuracy bars and three count bars, none flat
    cm = np.full((20, 20), 1_234_567)
    root = _parse(charts.heatmap(cm, [f"c{i}" for i in range(20)], "pixels"))
    cell = float(next(r for r in root.iter(f"{SVG}rect") if r.get("class") == "cell").get("width"))
    sizes = {float(t.get("font-size")) for t in root.iter(f"{SVG}text") if t.get("class") == "count"}
    assert max(sizes) * 0.6 * 7 <= cell + 0.5  # seven digits fit their cell
    root = _parse(charts.bars(["a_very_long_class_name_here", *"bcdefghijklmn"], {"n": [1] * 14}, "t"))
    assert min(float(t.get("x")) - 0.6 * FONT * len(t.text) * 0.7072 for t in root.iter(f"{SVG}text")
               if t.get("class") == "xtick") >= 0  # fmt: skip
    names = [f"20261204-015737-digits-simple_cnn-{i} (val)" for i in range(5)]
    root = _parse(charts.line_panels({"loss": {n: ([1, 2], [1.0, 0.5]) for n in names}}, "epoch"))
    entries = [t for t in root.iter(f"{SVG}text") if t.get("class") == "legend"]
    assert [t.text for t in entries] == names and len({t.get("y") for t in entries}) > 1  # wrapped into rows
    width = float(root.get("width"))
    assert all(float(t.get("x")) + 0.6 * (FONT - 1) * len(t.text) <= width for t in entries)
