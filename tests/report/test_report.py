"""The HTML report: self-contained, escaped, and really drawn by a headless Chromium."""

from __future__ import annotations

import base64
import html
import io
import re
from html.parser import HTMLParser

import numpy as np
import pytest

from robustbench_opt.analysis.study import score_study
from robustbench_opt.report import render_report, study_figures, write_pngs
from robustbench_opt.storage import Store

URL_ATTRS = {"src", "href", "action", "data", "poster", "srcset", "formaction", "xlink:href"}


class Attrs(HTMLParser):
    """Collects every URL-bearing attribute of every tag."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.urls += [v or "" for k, v in attrs if k in URL_ATTRS]


def page_of(db: str, study: str, refresh: int | None = None) -> str:
    """The report page of `study` (standalone: no link back, no reload unless `refresh`)."""
    scored = score_study(Store(db), study, "final", epochs=True)
    assert scored.chance == 0.1  # the fixture's studies name no dataset: 10 classes
    return render_report(scored, refresh_seconds=refresh)


@pytest.fixture(scope="module")
def demo_page(report_db) -> str:
    return page_of(report_db, "demo")


def test_report_loads_nothing_from_outside(demo_page):
    parser = Attrs()
    parser.feed(demo_page)
    assert parser.urls == []  # no src/href at all: plotly.js is inline
    assert "cdn.plot.ly" not in re.sub(r"<script[^>]*>.*?</script>", "", demo_page, flags=re.S)
    assert "default-src 'none'" in demo_page  # the browser may not fetch anything either
    assert demo_page.count('class="plotly-graph-div"') == 4


def test_report_escapes_names_from_users(report_db, evil):
    page = page_of(report_db, evil)
    assert evil not in page
    assert f"<h1>Study {html.escape(evil)}</h1>" in page
    parser = Attrs()
    parser.feed(page)
    assert parser.urls == []
    assert "img" not in parser.tags


def test_report_shows_scores_progress_and_refresh(report_db, demo_page):
    assert "16 trials: 12 done, 1 diverged, 1 failed, 1 running, 1 pending" in demo_page
    assert "E[best@2] %" in demo_page and "population (ddof=0)" in demo_page
    assert "E[best@5] %" not in demo_page  # no grid here has 5 cells
    assert 'http-equiv="refresh"' not in demo_page
    assert '<meta http-equiv="refresh" content="30">' in page_of(report_db, "demo", 30)


def _pixels(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def _coloured_share(png: bytes) -> float:
    """Share of saturated pixels (not white, grey or black)."""
    pixels = _pixels(png)
    return float((pixels.max(axis=2) - pixels.min(axis=2) > 60).mean())


def _painted_share(png: bytes) -> float:
    """Share of pixels that are not the white page."""
    return float((_pixels(png).min(axis=2) < 235).mean())


BLOCKED = ["http://*", "https://*", "ws://*", "wss://*", "ftp://*"]


def open_page(devtools, path) -> str:
    """Loads `path` in a fresh tab that logs every request and blocks remote ones; the session."""
    target = devtools.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    attached = devtools.send("Target.attachToTarget", {"targetId": target, "flatten": True})
    session = attached["sessionId"]
    devtools.send("Network.enable", {}, session)
    devtools.send("Network.setBlockedURLs", {"urls": BLOCKED}, session)
    devtools.send("Page.enable", {}, session)
    metrics = {"width": 1400, "height": 1200, "deviceScaleFactor": 1, "mobile": False}
    devtools.send("Emulation.setDeviceMetricsOverride", metrics, session)
    devtools.send("Page.navigate", {"url": path.as_uri()}, session)
    devtools.wait_event("Page.loadEventFired")
    return session


def evaluate(devtools, session: str, expression: str):
    reply = devtools.send(
        "Runtime.evaluate",
        {"expression": expression, "awaitPromise": True, "returnByValue": True},
        session,
    )
    return reply["result"]["value"]


def requested_urls(devtools) -> list[str]:
    return [
        e["params"]["request"]["url"]
        for e in devtools.events
        if e.get("method") == "Network.requestWillBeSent"
    ]


def remote(urls: list[str]) -> list[str]:
    return [u for u in urls if not u.startswith(("file:", "data:", "blob:", "about:"))]


WAIT_HEATMAPS = """new Promise(done => { const t0 = Date.now(); (function poll() {
    const n = document.querySelectorAll('#fig-heatmaps g.hm image').length;
    if (n >= 2 || Date.now() - t0 > 15000) done(n); else setTimeout(poll, 100); })(); })"""
HEATMAP_BOX = """(() => { const r = document.querySelector('#fig-heatmaps g.hm image')
    .getBoundingClientRect(); return [r.x + scrollX, r.y + scrollY, r.width, r.height]; })()"""


@pytest.mark.slow
def test_headless_chromium_draws_the_heatmaps_without_network(devtools, report_db, tmp_path):
    path = tmp_path / "report.html"
    path.write_text(page_of(report_db, "demo"), encoding="utf-8")
    # a control page proves that remote requests would be seen (and blocked)
    control = tmp_path / "control.html"
    control.write_text('<img src="http://203.0.113.9/x.png">')
    open_page(devtools, control)
    assert remote(requested_urls(devtools)) == ["http://203.0.113.9/x.png"]
    devtools.events.clear()

    session = open_page(devtools, path)
    assert evaluate(devtools, session, WAIT_HEATMAPS) == 2  # one drawn heatmap per optimizer
    svg_layers = "document.querySelectorAll('.js-plotly-plot .main-svg').length"
    assert evaluate(devtools, session, svg_layers) >= 8  # 4 figures, each drawn as SVG layers
    box = evaluate(devtools, session, HEATMAP_BOX)
    clip = dict(zip(("x", "y", "width", "height"), box, strict=True)) | {"scale": 1}
    shot = devtools.send(
        "Page.captureScreenshot",
        {"format": "png", "captureBeyondViewport": True, "clip": clip},
        session,
    )["data"]
    assert _painted_share(base64.b64decode(shot)) > 0.9  # every cell was painted
    assert _coloured_share(base64.b64decode(shot)) > 0.2  # the Viridis ones in colour
    urls = requested_urls(devtools)
    assert path.as_uri() in urls  # the log works for this page too
    assert remote(urls) == []


@pytest.mark.slow
def test_png_export_through_kaleido(report_db, tmp_path, monkeypatch, chromium):
    monkeypatch.setenv("BROWSER_PATH", chromium)
    store = Store(report_db)
    figures = study_figures(store.cells_frame("demo"), store.epochs_frame("demo"), "final", 0.1)
    written = write_pngs({"heatmaps": figures["heatmaps"]}, tmp_path / "figs")
    assert [p.name for p in written] == ["heatmaps.png"]
    png = written[0].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert _coloured_share(png) > 0.05


PAGE_LAYOUT = """(() => { const v = document.querySelector('#verdict');
    const r = v.getBoundingClientRect(); const style = getComputedStyle(v);
    const table = document.querySelector('h2 + .fits table').getBoundingClientRect();
    return {verdict: [r.x, r.y, r.width, r.height], visible: style.visibility === 'visible'
              && style.display !== 'none' && style.opacity === '1',
            text: v.innerText, scrollWidth: document.documentElement.scrollWidth,
            tableRight: table.right, folded: !document.querySelector('details').open}; })()"""


@pytest.mark.slow
def test_headless_chromium_at_1400px_shows_the_verdict_first_without_horizontal_overflow(
    devtools, report_db, tmp_path
):
    path = tmp_path / "report.html"
    path.write_text(page_of(report_db, "done"), encoding="utf-8")
    session = open_page(devtools, path)  # a 1400 x 1200 px viewport
    assert evaluate(devtools, session, WAIT_HEATMAPS) == 3
    layout = evaluate(devtools, session, PAGE_LAYOUT)
    x, y, width, height = layout["verdict"]
    assert layout["visible"] and width > 1000 and height > 50
    assert y + height < 1200  # on the first screen, above the scores
    assert layout["text"].startswith("Verdict") and "Ranked by mean" in layout["text"]
    assert layout["scrollWidth"] <= 1400  # nothing overflows a 1400 px page
    assert layout["folded"] and layout["tableRight"] <= 1400
    unfolded = "document.querySelector('details').open = true; document.documentElement.scrollWidth"
    assert evaluate(devtools, session, unfolded) <= 1400  # the wide table scrolls in its box
    shot = devtools.send("Page.captureScreenshot", {"format": "png"}, session)["data"]
    pixels = _pixels(base64.b64decode(shot))
    assert pixels.shape[:2] == (1200, 1400)
    verdict = pixels[int(y) : int(y + height), int(x) : int(x + width)]
    assert (verdict.min(axis=2) < 100).mean() > 0.01  # dark text drawn in the verdict box
    assert (
        _painted_share(base64.b64decode(shot)) > 0.1
        and _coloured_share(base64.b64decode(shot)) > 0.02
    )  # not blank: text, the table and the top of the heatmaps
