"""A deep link as the first request of a fresh server (issue 22 item 4, measured).

Streamlit treats `pages/` next to app.py as an old-style multipage folder until the first
`st.navigation` call of the process. Measured with Streamlit 1.67 (a copy of the tree with the
`page_entry()` lines removed, a fresh server, Chromium): when the first request is `/train`, the
page runs without app.py (no sidebar, navigation by file name: 'app', 'feature maps', 'profile', ...)
and every later request of every session stays like that, since no `st.navigation` call ever comes;
with `/` first, every page runs inside app.py. So not only AppTest needs `entry.page_entry()`: the
real server does too. The browser test below fails when the first page it opens drops the call
(checked on a copy of the tree); the static test checks every page.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import app_support as s
import browser_flow as bf
from neuroalign.ui import nav

ROOT = Path(__file__).resolve().parents[1]


def test_every_page_sets_up_the_app_frame_before_anything_else():
    """Each file of pages/ calls `page_entry()` at its top level before any other call."""
    for page in sorted((ROOT / "pages").glob("*.py")):
        calls = [node.value for node in ast.parse(page.read_text()).body
                 if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)]
        assert calls, page.name
        first = calls[0].func
        assert getattr(first, "id", getattr(first, "attr", None)) == "page_entry", page.name


def _frame(page, title: str) -> tuple[str, str]:
    page.get_by_role("heading", name=title, exact=True).first.wait_for(timeout=60_000)
    bf.wait_idle(page, 60_000)
    page.wait_for_timeout(1_000)
    side = page.locator('[data-testid="stSidebar"]')
    links = page.locator('[data-testid="stSidebarNav"]')
    return (side.inner_text() if side.count() else ""), (links.inner_text() if links.count() else "")


@pytest.mark.browser
@pytest.mark.skipif(not Path(bf.CHROMIUM).exists(), reason="needs Debian's chromium at /usr/bin/chromium")
def test_a_deep_link_on_a_fresh_server_runs_inside_the_app_frame(tmp_path):
    from playwright.sync_api import sync_playwright

    dirs = {k: tmp_path / k for k in ("data", "runs", "cache")}
    for path in dirs.values():
        path.mkdir()
    s.write_subject(dirs["data"], "m1", n_images=60, n_neurons=32)
    env = {"NEUROALIGN_DATA_DIR": str(dirs["data"]), "NEUROALIGN_RUNS_DIR": str(dirs["runs"]),
           "NEUROALIGN_CACHE_DIR": str(dirs["cache"]), "NEUROALIGN_NO_DEMO": "1", "OMP_NUM_THREADS": "1"}
    titles = [p.title for p in nav.PAGES]
    with bf.streamlit_server(env, tmp_path / "streamlit.log") as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=bf.CHROMIUM, args=bf.CHROMIUM_ARGS, headless=True)
        try:
            for url in ("train", "retrieval"):  # the first request of the process, then another session
                page = browser.new_page(viewport={"width": 1440, "height": 1000})
                page.goto(f"{base}/{url}")
                sidebar, links = _frame(page, bf.TITLES[url])
                assert dirs["data"].name in sidebar and "Runs" in sidebar, (url, sidebar)  # app's sidebar
                assert all(t in links for t in titles), (url, links)  # nav.PAGES, not file names
                assert "app" not in links.lower().split("\n"), (url, links)
                page.close()
        finally:
            browser.close()
