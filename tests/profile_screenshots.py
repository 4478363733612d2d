"""Screenshots of the Image models page in headless Chromium (the system /usr/bin/chromium).

    python tests/profile_screenshots.py DATA_ROOT SUBJECT OUT_DIR

DATA_ROOT must hold SUBJECT with a profile.json (e.g. `python -m neuroalign profile --subjects sim-M1
--data-dir DATA_ROOT`). Writes OUT_DIR/screenshot_profile_1440.png and _1024.png (900 px high, scrolled
to the summary row and the chart) and the whole page at each width (_full, 2,600 px high).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from browser_flow import CHROMIUM, CHROMIUM_ARGS, streamlit_server, wait_idle  # noqa: E402


def main(data_root: str, subject: str, out_dir: str) -> None:
    from playwright.sync_api import sync_playwright

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="profile-shots-"))
    env = {"NEUROALIGN_DATA_DIR": str(Path(data_root).resolve()), "NEUROALIGN_RUNS_DIR": str(tmp / "runs"),
           "NEUROALIGN_CACHE_DIR": str(tmp / "cache"), "NEUROALIGN_NO_DEMO": "1"}
    with streamlit_server(env, tmp / "streamlit.log") as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for width in (1440, 1024):
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.goto(f"{base}/profile", timeout=120_000)
            page.get_by_role("heading", name="Image models", exact=True).first.wait_for(timeout=120_000)
            wait_idle(page, 120_000)
            page.locator('[data-testid="stPlotlyChart"]').first.wait_for(timeout=60_000)
            page.wait_for_timeout(1500)
            # the summary row and the chart in view (the title, subject and job line are above)
            page.get_by_text("Best layer:").first.evaluate(
                "e => { e.scrollIntoView({block: 'start'}); "
                "const m = document.querySelector('[data-testid=\"stMain\"]'); if (m) m.scrollBy(0, -70); }")
            page.wait_for_timeout(800)
            page.screenshot(path=str(out / f"screenshot_profile_{width}.png"), full_page=False)
            page.set_viewport_size({"width": width, "height": 2600})  # everything, for review
            page.evaluate("window.scrollTo(0, 0)")
            page.get_by_role("heading", name="Image models", exact=True).first.evaluate(
                "e => e.scrollIntoView({block: 'start'})")
            page.wait_for_timeout(1500)
            page.screenshot(path=str(out / f"screenshot_profile_{width}_full.png"), full_page=False)
            page.close()
        browser.close()


if __name__ == "__main__":
    main(*sys.argv[1:4])
