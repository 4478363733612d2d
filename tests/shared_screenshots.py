"""Screenshots of the pages on a shared run in headless Chromium (the system /usr/bin/chromium).

    python tests/shared_screenshots.py OUT_DIR

Makes tiny subjects A, B, C (the same images) and D (other images) in a temporary data root, starts
the dashboard, trains one shared model over A, B and C from the Train page (through the job
machinery), and writes OUT_DIR/shared_<page>_<width>.png for Train (the shared option, its job card,
the adapt option), Runs, Retrieval (with cross-subject retrieval), Feature maps and Neurons, at 1,440 and 1,024 px.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from browser_flow import CHROMIUM, CHROMIUM_ARGS, streamlit_server, wait_idle  # noqa: E402
from shared_support import write_shared_subjects  # noqa: E402


def _open(page, base: str, path: str, title: str) -> None:
    page.locator('[data-testid="stSidebarNav"]').get_by_text(title, exact=True).click()
    page.get_by_role("heading", name=title, exact=True).first.wait_for(timeout=120_000)
    wait_idle(page, 120_000)
    page.wait_for_timeout(1200)


def _choose(page, box, value: str) -> None:
    """Pick `value` in a selectbox / multiselect: type it, Enter, wait for the rerun."""
    box.click()
    page.keyboard.type(value)
    page.keyboard.press("Enter")
    page.keyboard.press("Escape")
    wait_idle(page)
    page.wait_for_timeout(500)


def _scroll_to(page, text: str) -> None:
    page.get_by_text(text).first.evaluate(
        "e => { e.scrollIntoView({block: 'start'}); "
        "const m = document.querySelector('[data-testid=\"stMain\"]'); if (m) m.scrollBy(0, -70); }")
    page.wait_for_timeout(800)


def main(out_dir: str) -> None:
    from playwright.sync_api import sync_playwright

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="shared-shots-"))
    write_shared_subjects(tmp / "data", names=("A", "B", "C"), n_images=120)
    write_shared_subjects(tmp / "data", names=("D",), n_images=120, image_seed=5)
    env = {"NEUROALIGN_DATA_DIR": str(tmp / "data"), "NEUROALIGN_RUNS_DIR": str(tmp / "runs"),
           "NEUROALIGN_CACHE_DIR": str(tmp / "cache"), "NEUROALIGN_NO_DEMO": "1"}
    with streamlit_server(env, tmp / "streamlit.log") as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.goto(f"{base}/", timeout=120_000)  # a first visit through Home, as a user arrives
        page.get_by_role("heading", name="neuroalign", exact=True).first.wait_for(timeout=120_000)
        wait_idle(page, 120_000)
        page.locator('[data-testid="stSidebarNav"]').get_by_text("Train", exact=True).click()
        page.get_by_role("heading", name="Train", exact=True).first.wait_for(timeout=120_000)
        page.get_by_role("button", name=re.compile("^Start")).first.wait_for(timeout=120_000)
        wait_idle(page, 120_000)
        page.get_by_role("radio", name="One shared model over the selected subjects").check(force=True)
        page.get_by_role("button", name=re.compile("^Start 1 shared model")).first.wait_for(timeout=60_000)
        wait_idle(page)
        _choose(page, page.get_by_role("combobox").first, "B")  # the Subjects multiselect (A is the default)
        _choose(page, page.get_by_role("combobox").first, "C")
        _choose(page, page.get_by_role("combobox", name=re.compile("Image model")).first, "random_rectified")
        page.get_by_role("button", name=re.compile("^Start 1 shared model over 3")).first.wait_for(timeout=60_000)
        page.wait_for_timeout(800)
        for width in (1440, 1024):
            page.set_viewport_size({"width": width, "height": 900})
            page.wait_for_timeout(800)
            page.screenshot(path=str(out / f"shared_train_form_{width}.png"))
        page.get_by_role("button", name=re.compile("^Start 1 shared model")).first.click()
        page.get_by_text(re.compile("% done")).first.wait_for(timeout=120_000)
        page.wait_for_timeout(300)
        page.screenshot(path=str(out / "shared_train_running_1024.png"))
        page.get_by_text("shared model finished").first.wait_for(timeout=300_000)
        wait_idle(page)
        page.wait_for_timeout(1000)
        for width in (1440, 1024):
            page.set_viewport_size({"width": width, "height": 900})
            page.wait_for_timeout(1000)
            page.screenshot(path=str(out / f"shared_train_{width}.png"))
        page.get_by_text("New training", exact=True).first.click()  # collapsed once a job exists
        page.get_by_role("radio", name="Adapt a new subject from a shared run").check(force=True)
        page.get_by_role("button", name=re.compile("^Adapt D")).first.wait_for(timeout=60_000)
        wait_idle(page)
        for width in (1440, 1024):
            page.set_viewport_size({"width": width, "height": 900})
            page.wait_for_timeout(800)
            page.screenshot(path=str(out / f"shared_train_adapt_{width}.png"))
        for path, title, anchor in (("runs", "Runs", "Per subject"), ("retrieval", "Retrieval", "Across subjects"),
                                    ("feature_maps", "Feature maps", None), ("neurons", "Neurons", None)):
            for width in (1440, 1024):
                page.set_viewport_size({"width": width, "height": 900})
                _open(page, base, path, title)
                page.screenshot(path=str(out / f"shared_{path}_{width}.png"))
                if anchor:
                    _scroll_to(page, anchor)
                    page.screenshot(path=str(out / f"shared_{path}_{width}_cross.png"))
                page.set_viewport_size({"width": width, "height": 2600})  # the whole page, for review
                page.wait_for_timeout(1500)
                page.screenshot(path=str(out / f"shared_{path}_{width}_full.png"))
        browser.close()
    print(tmp)


if __name__ == "__main__":
    main(sys.argv[1])
