"""The built book in a real browser: every page offline, and the Draw-a-digit page at work.

The built HTML is served on 127.0.0.1 and opened in headless Chromium (Debian's, driven by
Playwright; `.ci/run` installs both). Screenshots of the page are kept in `_build/artifacts/`.
Skipped, with the reason, only where no Chromium or no Playwright is installed.
"""

from __future__ import annotations

import functools
import http.server
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import shifts
from helpers.inference import read_web_bundle

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "_build" / "artifacts"
BUNDLE = ROOT / "_static" / "mnist" / "weights.mjs"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium: apt-get install chromium")


# Digits as a person might draw them on the 280 x 280 canvas: strokes of (x, y) points. Chapter 13
# reads the same strokes, drawn with each of the page's pens, in Python.
STROKES = shifts.STROKES


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def served(built_book: Path) -> Iterator[str]:
    """The built book on http://127.0.0.1:<free port>."""
    handler = functools.partial(_Quiet, directory=str(built_book))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture
def draw_page(browser: object, served: str) -> Iterator[tuple[object, dict]]:
    """The page, ready, with what it logged and requested (errors, requests off 127.0.0.1)."""
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    seen: dict[str, list] = {"errors": [], "outside": []}
    page.on("console", lambda m: seen["errors"].append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: seen["errors"].append(str(e)))
    page.on(
        "request",
        lambda r: None if r.url.startswith((served, "data:")) else seen["outside"].append(r.url),
    )
    page.goto(f"{served}/book/draw.html")
    page.wait_for_selector("#mnist-draw[data-ready]", timeout=30_000)
    yield page, seen
    page.close()


def draw(page: object, strokes: list) -> str | None:
    """Clear the canvas, draw the strokes with the mouse; the page's prediction."""
    page.click(".md-clear")
    canvas = page.locator(".md-canvas")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()

    def at(x: float, y: float) -> tuple[float, float]:
        return box["x"] + x * box["width"] / 280, box["y"] + y * box["height"] / 280

    for stroke in strokes:
        page.mouse.move(*at(*stroke[0]))
        page.mouse.down()
        for point in stroke[1:]:
            page.mouse.move(*at(*point), steps=8)
        page.mouse.up()
    return page.get_attribute(".md-answer", "data-prediction")


def test_the_page_reads_drawn_digits_with_every_model(draw_page):
    page, seen = draw_page
    assert page.get_attribute("#mnist-draw", "data-ready") == "true", page.inner_text("#mnist-draw")
    assert page.input_value(".md-model") == "robust", "the robust CNN is the default"
    read = {}
    for model in ("robust", "robust_mlp", "lenet", "cnn", "mlp"):
        page.select_option(".md-model", model)
        read[model] = {d: draw(page, strokes) for d, strokes in STROKES.items()}
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "draw-page.png"), full_page=True)
    right = {m: sum(str(d) == p for d, p in r.items()) for m, r in read.items()}
    print(f"drawn digits read right, of {len(STROKES)}: {right}")  # for the report (-rP)
    assert all(p is not None for r in read.values() for p in r.values()), read
    assert right["robust"] >= 9 and right["lenet"] >= 9 and right["cnn"] >= 9, read
    assert right["mlp"] >= 7 and right["robust_mlp"] >= 7, read  # strokes, not ink
    assert not seen["errors"] and not seen["outside"], seen


def test_the_default_model_reads_thin_thick_and_faint_pens(draw_page):
    page, seen = draw_page
    read = {}
    for pen in shifts.PENS:
        page.select_option(".md-pen", pen)
        read[pen] = {d: draw(page, strokes) for d, strokes in STROKES.items()}
        page.screenshot(path=str(ARTIFACTS / f"draw-page-{pen}-pen.png"))
    right = {pen: sum(str(d) == p for d, p in r.items()) for pen, r in read.items()}
    print(f"the robust CNN, drawn digits read right and sure, of {len(STROKES)}: {right}")
    # Chapter 13 (section 13.8) reads the same strokes with each pen in Python: all ten, sure.
    assert all(count >= 9 for count in right.values()), read
    assert not seen["errors"], seen


def test_the_page_says_not_sure_by_the_chapters_rule(draw_page):
    page, seen = draw_page
    threshold = read_web_bundle(BUNDLE.read_text())["robust"]["not_sure_below"]
    page.select_option(".md-model", "robust")
    buttons = page.locator(".md-example")
    labels = [int(buttons.nth(i).inner_text().split()[-1]) for i in range(buttons.count())]
    said = []
    for i, label in enumerate(labels):
        buttons.nth(i).click()
        answer = page.get_attribute(".md-answer", "data-prediction")
        guess = int(page.get_attribute(".md-answer", "data-guess"))
        shown = page.inner_text(".md-answer")
        p = float(re.search(r"p = ([\d.]+)", shown).group(1))
        said.append((label, guess, answer, shown))
        # the page's words follow its rule: "not sure" exactly when p is below the threshold
        # (p is shown to 2 decimals: a p within 0.005 of the threshold could round either way)
        if abs(p - threshold) > 0.005:
            assert (answer == "not sure") == (p < threshold), (label, shown, threshold)
        unsure = "md-unsure" in page.get_attribute(".md-answer", "class")
        assert (answer == "not sure") == unsure and ("not sure" in shown) == unsure
    wrong = [s for s in said if s[0] != s[1]]
    assert wrong and all(answer == "not sure" for _, _, answer, _ in wrong), said
    assert sum(answer == "not sure" for _, _, answer, _ in said) < len(said) / 2, said
    assert not seen["errors"], seen


def test_the_test_digits_are_read_as_the_models_read_them_in_python(draw_page):
    page, seen = draw_page
    buttons = page.locator(".md-example")
    labels = [int(buttons.nth(i).inner_text().split()[-1]) for i in range(buttons.count())]
    for model in ("robust", "robust_mlp", "lenet", "cnn", "mlp"):
        page.select_option(".md-model", model)
        answers = []
        for i in range(len(labels)):
            buttons.nth(i).click()
            answers.append(int(page.get_attribute(".md-answer", "data-guess")))
        wrong = sum(a != label for a, label in zip(answers, labels, strict=True))
        print(f"{model}: {len(labels) - wrong} of {len(labels)} test digits read right")
        assert answers[:10] == list(range(10)), (model, answers)  # the first of each class
        assert wrong >= 2, answers
    assert not seen["errors"], seen


def test_the_page_fits_a_phone(draw_page):
    page, _ = draw_page
    page.set_viewport_size({"width": 390, "height": 800})
    page.wait_for_timeout(200)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "draw-page-phone.png"), full_page=True)
    assert draw(page, STROKES[7]) == "7"


def test_the_chinese_page_speaks_chinese_and_reads_the_same(browser, served):
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(f"{served}/zh/book/draw.html")
    page.wait_for_selector("#mnist-draw[data-ready]", timeout=30_000)
    assert page.get_attribute("#mnist-draw", "data-ready") == "true"
    assert page.inner_text(".md-clear") == "清除" and "准备就绪" in page.inner_text(".md-status")
    options = page.locator(".md-model option").all_inner_texts()
    assert len(options) == 5 and all("测试集准确率" in o for o in options), options
    assert "没有把握" in options[0], "the default model says what it is"
    assert draw(page, STROKES[3]) == "3"
    assert not errors, errors
    page.close()


def test_a_broken_weights_file_is_reported_in_words(browser, served, tmp_path):
    page = browser.new_page()
    page.route(
        "**/_static/mnist/weights.mjs",
        lambda route: route.fulfill(
            status=200,
            content_type="text/javascript",
            body="window.MNIST_BOOK_WEIGHTS = {mlp: {format: 'mnist-book-weights/1', floats: 10, "
            "layers: [], data: 'AAAA'}};",
        ),
    )
    page.goto(f"{served}/book/draw.html")
    page.wait_for_selector("#mnist-draw[data-ready]", timeout=30_000)
    assert page.get_attribute("#mnist-draw", "data-ready") == "error"
    status = page.inner_text(".md-status")
    assert "could not be loaded" in status and "truncated" in status, status
    page.route("**/_static/mnist/weights.mjs", lambda route: route.fulfill(status=404, body=""))
    page.reload()
    page.wait_for_selector("#mnist-draw[data-ready]", timeout=30_000)
    assert "could not be loaded" in page.inner_text(".md-status")
    page.close()


def _pages(built_book: Path) -> list[str]:
    """Every page of both editions (the Chinese one in zh/)."""
    pages = [*(built_book / "book").glob("*.html"), *(built_book / "zh" / "book").glob("*.html")]
    return sorted(p.relative_to(built_book).as_posix() for p in pages)


def test_every_page_reads_offline_at_a_phones_width(browser, served, built_book):
    """Formulas typeset, widgets drawn, nothing fetched from elsewhere, no errors, nothing too wide.

    MathJax, require.js and the widget manager are the book's own copies (_ext/book_html.py);
    any request that leaves 127.0.0.1 is refused, as it would fail on a train.
    """
    context = browser.new_context(viewport={"width": 390, "height": 800})
    outside: list[str] = []

    def local_only(route: object) -> None:
        url = route.request.url
        if url.startswith((served, "data:")):
            route.continue_()
        else:
            outside.append(url)
            route.abort()

    context.route("**/*", local_only)
    problems = {}
    for rel in _pages(built_book):
        page = context.new_page()
        errors: list[str] = []
        page.on(
            "console", lambda m, errors=errors: errors.append(m.text) if m.type == "error" else None
        )
        page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
        page.goto(f"{served}/{rel}", wait_until="load")
        html = (built_book / rel).read_text()
        if 'class="math' in html:  # wait for MathJax to typeset the page
            page.wait_for_selector("mjx-container", timeout=30_000)
        views = html.count('type="application/vnd.jupyter.widget-view+json"')
        if views:  # the widget manager replaces each view's script with the widget
            drawn = f"document.querySelectorAll('.jupyter-widgets').length >= {views}"
            page.wait_for_function(drawn, timeout=30_000)
        page.wait_for_timeout(300)
        found = {
            "console errors": errors,
            "raw TeX": page.evaluate("/\\\\\\(|\\\\\\[/.test(document.body.innerText)"),
            "wider than 390 px": page.evaluate("document.documentElement.scrollWidth") > 390,
        }
        bad = {k: v for k, v in found.items() if v}
        if bad:
            problems[rel] = bad
        page.close()
    context.close()
    assert not problems, problems
    assert not outside, sorted(set(outside))[:10]
