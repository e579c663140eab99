"""The HTML reports in a real headless browser (Debian's chromium, driven by playwright).

Checks what a reader would notice: console errors, broken images, a missing table, and any attempt to
load something from the network (the report must work offline). Skipped only when chromium or the
playwright package is missing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from reglab.reports.ablation import render_ablation
from reglab.reports.compare import render_compare
from test_report import README, compare_spec, make_study

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"chromium not found at {CHROMIUM}")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


def open_report(browser, html_path: Path, screenshot: Path):
    """Load the page offline; return (console errors, non-local requests, image widths, page)."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors, remote = [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))

    def guard(route):  # anything but the file itself and its data: URIs would need a network
        if route.request.url.startswith(("file:", "data:")):
            route.continue_()
        else:
            remote.append(route.request.url)
            route.abort()

    page.route("**/*", guard)
    page.goto(html_path.resolve().as_uri(), wait_until="load")
    widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
    page.screenshot(path=str(screenshot), full_page=True)
    return errors, remote, widths, page


def test_compare_report_in_chromium(browser, tmp_path):
    root = make_study(tmp_path / "study", compare_spec([0.60, 0.62], [0.75, 0.78]))
    _, html_path = render_compare(root)
    errors, remote, widths, page = open_report(browser, html_path, tmp_path / "compare.png")
    assert errors == []
    assert remote == []
    assert len(widths) >= 9 and all(w > 0 for w in widths), widths
    table = page.locator("table#key-differences")
    assert table.count() == 1 and table.is_visible()
    assert "Regularization techniques" in table.inner_text()
    # the model diagrams are drawn (inline SVG), not shown as Mermaid source
    assert page.locator("pre.mermaid-source").count() == 0
    diagrams = page.locator("svg.model-diagram")
    assert diagrams.count() == 2
    for i in range(2):
        box = diagrams.nth(i).bounding_box()
        assert box and box["width"] > 400 and box["height"] > 100, box
        assert diagrams.nth(i).locator("text").count() >= 8
    # nothing spills past the page: every figure fits the text column
    column = page.evaluate("document.body.clientWidth")
    widths = page.eval_on_selector_all("figure img, figure svg", "els => els.map(e => e.getBoundingClientRect().width)")
    for w in widths:
        assert 0 < w <= column
    assert (tmp_path / "compare.png").stat().st_size > 10_000
    page.close()


def test_ablation_report_in_chromium(browser, tmp_path):
    spec = {k: README[k] for k in ("full", "no-dropout", "no-batchnorm")}  # the README's numbers, 2 seeds each
    root = make_study(tmp_path / "study", spec, kind="ablate", n_val=3925)
    _, html_path = render_ablation(root, baseline="full")
    errors, remote, widths, page = open_report(browser, html_path, tmp_path / "ablation.png")
    assert errors == [] and remote == []
    assert widths and all(w > 0 for w in widths), widths
    assert page.locator("table#ablation").is_visible()
    assert page.locator("table#ablation-differences").is_visible()
    warnings = page.locator("p.warning")  # one: no claim about `no-batchnorm`, one of whose 2 seeds learned
    assert warnings.count() == 1 and "No claim about no-batchnorm against full" in warnings.inner_text()
    assert "at chance" in page.locator("table#ablation").inner_text()
    page.close()
