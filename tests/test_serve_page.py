"""The web page in a real headless Chromium against a real `keel serve`: draw a digit on the
canvas, press Predict, see the bars; upload a picture; no console errors; screenshots are
saved under test-artifacts/."""

from __future__ import annotations

from pathlib import Path

import pytest
from browser import HAVE_CHROMIUM, launch
from serving import digit_png

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"

pytestmark = pytest.mark.skipif(not HAVE_CHROMIUM, reason="needs Chromium (.ci/run installs it)")

# strokes in the 280x280 pad's own coordinates: a "7" (top bar, then the diagonal) and a "1"
SEVEN = [[(60, 50), (220, 50)], [(220, 50), (120, 240)]]
ONE = [[(140, 30), (140, 250)]]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def server(digits_server: str) -> str:
    return digits_server


@pytest.fixture
def problems() -> list[str]:
    """Console errors, page errors and failed requests seen by the page."""
    return []


@pytest.fixture
def page(browser, server: str, problems: list[str]):
    context = browser.new_context(viewport={"width": 800, "height": 900})
    page = context.new_page()
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
    page.goto(server + "/")
    page.wait_for_selector("#image-input:not([hidden])")
    yield page
    context.close()
    assert problems == []


def _draw(page, strokes) -> None:
    box = page.locator("#pad").bounding_box()
    sx, sy = box["width"] / 280, box["height"] / 280
    for stroke in strokes:
        (x0, y0), (x1, y1) = stroke
        page.mouse.move(box["x"] + x0 * sx, box["y"] + y0 * sy)
        page.mouse.down()
        for i in range(1, 21):  # many small moves, as a hand makes
            t = i / 20
            page.mouse.move(box["x"] + (x0 + (x1 - x0) * t) * sx, box["y"] + (y0 + (y1 - y0) * t) * sy)
        page.mouse.up()


def _bars(page) -> list[tuple[str, str]]:
    labels = page.locator("#bars .label").all_inner_texts()
    values = page.locator("#bars .probability").all_inner_texts()
    return list(zip(labels, values, strict=True))


@pytest.mark.parametrize(("name", "strokes", "digit"), [("seven", SEVEN, "7"), ("one", ONE, "1")])
def test_draw_a_digit_and_see_the_prediction(page, name: str, strokes, digit: str):
    assert "simple_cnn" in page.locator("#model").inner_text()
    _draw(page, strokes)
    with page.expect_response(lambda r: "/predict" in r.url) as answer:
        page.click("#predict-image")
    assert answer.value.status == 200
    served = answer.value.json()["predictions"][0]["top"]
    page.wait_for_selector("#bars li")
    bars = _bars(page)
    # the page shows exactly what the server answered: 5 classes, best first, as percentages
    assert bars == [(t["class"], f"{t['probability'] * 100:.1f}%") for t in served]
    assert len(bars) == 5 and bars[0][0] == digit
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"serve-page-drawn-{name}.png"), full_page=True)


def test_upload_a_picture(page, tmp_path: Path):
    path, label = digit_png(tmp_path, 3)
    with page.expect_response(lambda r: "/predict" in r.url) as answer:
        page.set_input_files("#file", str(path))
    assert answer.value.status == 200
    page.wait_for_selector("#bars li")
    assert _bars(page)[0][0] == str(label)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "serve-page-upload.png"), full_page=True)


def test_a_bad_upload_shows_the_error_and_the_page_goes_on(page, problems: list[str], tmp_path: Path):
    bad = tmp_path / "notes.png"
    bad.write_text("not a picture")
    with page.expect_response(lambda r: "/predict" in r.url) as answer:
        page.set_input_files("#file", str(bad))
    assert answer.value.status == 400
    page.wait_for_selector("#error:not(:empty)")
    assert "not a readable image" in page.locator("#error").inner_text()
    # Chromium logs every 4xx response as a console error: this one was asked for
    problems.remove("console error: Failed to load resource: the server responded with a status of 400 (Bad Request)")
    _draw(page, ONE)
    page.click("#predict-image")
    page.wait_for_selector("#bars li")
    assert page.locator("#error").inner_text() == ""
