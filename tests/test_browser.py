"""End to end in a real browser: start the server, visit every page, train, see curves and retrieval.

Uses Debian's Chromium (/usr/bin/chromium) through the `playwright` Python package; skipped only
when that browser is missing. Screenshots go to test-artifacts/ (or $NEUROALIGN_SCREENSHOT_DIR).
With NEUROALIGN_BROWSER_DEMO=1 it instead starts on an empty data root, lets the app create the
simulated demo subjects (or uses the data/, runs/ and cache/ folders under $NEUROALIGN_DEMO_ROOT when
set: the test suite points $NEUROALIGN_DATA_DIR & co. at temporary folders for every test) and trains
one of them with the 'recommended' preset for $NEUROALIGN_DEMO_BUDGET_S seconds (default 600): that
run makes the README screenshots (`NEUROALIGN_BROWSER_DEMO=1 NEUROALIGN_DEMO_ROOT=/tmp/neuroalign-demo
NEUROALIGN_SCREENSHOT_DIR=assets python -m pytest tests/test_browser.py`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

import app_support as s
import browser_flow as bf

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not Path(bf.CHROMIUM).exists(), reason="needs Debian's chromium at /usr/bin/chromium")]


def _no_app_exceptions(page) -> None:
    errors = page.locator('[data-testid="stException"]')
    assert errors.count() == 0, errors.first.inner_text()


def test_dashboard_end_to_end(tmp_path):
    from playwright.sync_api import sync_playwright

    demo = os.environ.get("NEUROALIGN_BROWSER_DEMO") == "1"
    out_dir = Path(os.environ.get("NEUROALIGN_SCREENSHOT_DIR") or bf.ROOT / "test-artifacts")
    dirs = {k: tmp_path / k for k in ("data", "runs", "cache")}
    if demo and os.environ.get("NEUROALIGN_DEMO_ROOT"):  # README screenshots: a demo root and its feature cache
        dirs = {k: Path(os.environ["NEUROALIGN_DEMO_ROOT"]) / k for k in dirs}
        for path in dirs.values():
            path.mkdir(parents=True, exist_ok=True)
    env = {"NEUROALIGN_DATA_DIR": str(dirs["data"]), "NEUROALIGN_RUNS_DIR": str(dirs["runs"]),
           "NEUROALIGN_CACHE_DIR": str(dirs["cache"]), "OMP_NUM_THREADS": "2"}
    if demo:
        env["NEUROALIGN_NO_DEMO"] = "0"
    else:
        env["NEUROALIGN_NO_DEMO"] = "1"
        s.write_subject(dirs["data"], "m1", n_images=60, n_neurons=32)
    page_errors: list[str] = []
    with bf.streamlit_server(env, tmp_path / "streamlit.log") as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=bf.CHROMIUM, args=bf.CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            page.on("pageerror", lambda exc: page_errors.append(str(exc)))
            page.goto(base)
            page.get_by_role("heading", name="neuroalign", exact=True).wait_for(timeout=600_000 if demo else 60_000)
            # the demo subjects are written by a server job; the page shows its progress, then redraws itself
            page.wait_for_function("() => !document.body.innerText.includes('creating the simulated demo subjects')",
                                   timeout=600_000)
            bf.wait_idle(page, 600_000 if demo else 30_000)
            _no_app_exceptions(page)
            bf.shot(page, out_dir, "home")

            bf.goto_page(page, "subjects")
            page.locator('[data-testid="stImage"]').first.wait_for()
            _no_app_exceptions(page)
            bf.shot(page, out_dir, "subjects")

            bf.goto_page(page, "train")
            if demo:  # the default 'recommended' preset, with a wall-clock budget
                bf.set_number(page, "Time budget (s)", bf.DEMO_BUDGET_S)
            else:
                bf.set_number(page, "Epochs", 4)
                bf.set_number(page, "Shared dimensions", 64)
            page.get_by_role("button", name=re.compile(r"^Start 1 run: ")).click()  # counts the runs it starts
            # the live loss curve appears (demo: after the backbone features of 1400 images are computed)
            page.locator(".js-plotly-plot").first.wait_for(timeout=900_000 if demo else 120_000)
            page.get_by_text("test top-1").first.wait_for(timeout=600_000 if demo else 90_000)
            bf.wait_idle(page)
            # once the job has ended, its card offers no Stop button (after the page's final refresh)
            page.wait_for_function("() => ![...document.querySelectorAll('button')]"
                                   ".some(b => b.innerText.trim() === 'Stop')", timeout=30_000)
            _no_app_exceptions(page)
            traces = page.locator(".js-plotly-plot").first.locator(".scatterlayer .trace")
            traces.nth(1).wait_for(state="attached")  # the chart is drawn again after the final refresh
            assert traces.count() >= 2  # train and validation curves
            bf.shot(page, out_dir, "train")  # the finished job: its message, loss and lr curves

            bf.goto_page(page, "retrieval")
            page.get_by_text("Query browser").wait_for()
            _no_app_exceptions(page)
            # the verdict against the best linear readout, and 95 % intervals, are on screen
            page.get_by_text("the best linear readout").first.wait_for()
            page.get_by_text("Test top-1 with 95 % intervals").first.wait_for()
            bf.shot(page, out_dir, "retrieval")
            page.get_by_role("heading", name="Query browser").evaluate("e => e.scrollIntoView({block: 'start'})")
            page.wait_for_timeout(300)
            captions = page.locator('[data-testid="stImageCaption"]')
            captions.first.wait_for()
            assert captions.count() >= 2 and "sim" in captions.first.inner_text()
            assert page.get_by_text("Match rank:").count() == 1  # wrapping text (a metric was cut at 1,024 px)
            bf.shot(page, out_dir, "retrieval_queries")

            bf.goto_page(page, "feature_maps")
            page.locator(".js-plotly-plot").nth(1).wait_for()
            _no_app_exceptions(page)
            bf.shot(page, out_dir, "feature_maps")

            bf.goto_page(page, "neurons")
            page.get_by_role("heading", name="neurons with the largest").wait_for(timeout=120_000)
            page.locator(".js-plotly-plot").first.wait_for()
            _no_app_exceptions(page)
            page.get_by_text("Measure", exact=True).first.evaluate("e => e.scrollIntoView({block: 'start'})")
            page.wait_for_timeout(500)  # the verdicts and the first row of charts in view
            bf.shot(page, out_dir, "neurons")

            bf.goto_page(page, "runs")
            page.get_by_text("Compare loss curves").wait_for()
            _no_app_exceptions(page)
            bf.shot(page, out_dir, "runs")
        finally:
            browser.close()
    assert not page_errors, page_errors
    assert demo or len(list(dirs["runs"].iterdir())) == 1
