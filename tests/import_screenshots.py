"""Screenshots of the Subjects page's Import tab in headless Chromium (the system /usr/bin/chromium).

    python tests/import_screenshots.py OUT_DIR

Writes generated NWB files (tests/nwb_support.py) and a MAT pair into a temporary folder, starts the
dashboard with an import folder (NEUROALIGN_IMPORT_ROOTS) holding some of them and a link that leads
out of it, and writes OUT_DIR/import_<step>_<width>.png at 1,440 and 1,024 px: the NWB upload with
its choices, its preview, a bad NWB file, an NWB file without stimulus images, and the server-import
section (its list, an NWB file's choices, the preview, the page after Save). Not collected by pytest.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from browser_flow import CHROMIUM, CHROMIUM_ARGS, streamlit_server, wait_idle  # noqa: E402

WIDTHS = (1440, 1024)


def _files(tmp: Path) -> dict[str, Path]:
    import h5py
    from scipy.io import savemat

    import app_support as s
    import nwb_support as ns

    up, inc, out = tmp / "upload", tmp / "incoming", tmp / "outside"
    for d in (up, inc / "2026-01" / "mouse7" / "Data", out):
        d.mkdir(parents=True)
    ns.write_nwb(up / "sub-07_ses-20260114_ophys.nwb", n_images=40, n_rois=30, planes=2, repeats=3,
                 extra=("Fluorescence",))
    ns.write_nwb(up / "no_ophys.nwb", n_images=12, n_rois=6)
    with h5py.File(up / "no_ophys.nwb", "r+") as f:
        del f["processing/ophys"]
    truth = ns.write_nwb(up / "no_templates.nwb", n_images=20, n_rois=10, templates="none", presentation="intervals")
    savemat(up / "stimuli.mat", {"images": truth["images"]})
    images, responses = s.tiny_pair(n_images=40, n_neurons=16)
    savemat(inc / "2026-01" / "mouse7" / "Data" / "images.mat", images)
    savemat(inc / "2026-01" / "mouse7" / "Data" / "responses.mat", responses)
    ns.write_nwb(inc / "sub-12_ses-20260120_behavior+ophys.nwb", n_images=40, n_rois=24, repeats=2)
    ns.write_nwb(out / "elsewhere.nwb", n_images=12, n_rois=6)
    (inc / "link-to-elsewhere.nwb").symlink_to(out / "elsewhere.nwb")
    return {"nwb": up / "sub-07_ses-20260114_ophys.nwb", "bad": up / "no_ophys.nwb",
            "bare": up / "no_templates.nwb", "stimuli": up / "stimuli.mat", "incoming": inc}


def _shots(page, out: Path, step: str, full: bool = False, anchor: str | None = None) -> None:
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        page.wait_for_timeout(900)
        if anchor:
            _scroll_to(page, anchor)
        page.mouse.move(2, 890)  # off the charts: no hover tool bar over a title
        page.wait_for_timeout(300)
        page.screenshot(path=str(out / f"import_{step}_{width}.png"))
        if full:
            page.set_viewport_size({"width": width, "height": 2400})
            page.wait_for_timeout(1200)
            page.screenshot(path=str(out / f"import_{step}_{width}_full.png"))
    page.set_viewport_size({"width": WIDTHS[0], "height": 900})
    page.wait_for_timeout(500)


def _scroll_to(page, text: str) -> None:
    page.get_by_text(text).first.evaluate(
        "e => { e.scrollIntoView({block: 'start'}); "
        "const m = document.querySelector('[data-testid=\"stMain\"]'); if (m) m.scrollBy(0, -70); }")
    page.wait_for_timeout(600)


def _upload(page, index: int, path: Path) -> None:
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').nth(index).set_input_files(str(path))
    page.wait_for_timeout(800)
    wait_idle(page, 120_000)
    page.wait_for_timeout(800)


def _remove_uploads(page) -> None:
    buttons = page.locator('[data-testid="stFileUploaderDeleteBtn"] button')
    while buttons.count():
        buttons.first.click()
        wait_idle(page)


def _check(page) -> None:
    page.get_by_role("button", name="Check files").first.click()
    page.wait_for_timeout(800)
    wait_idle(page, 120_000)
    page.wait_for_timeout(1000)


def main(out_dir: str) -> None:
    from playwright.sync_api import sync_playwright

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="import-shots-"))
    files = _files(tmp)
    env = {"NEUROALIGN_DATA_DIR": str(tmp / "data"), "NEUROALIGN_RUNS_DIR": str(tmp / "runs"),
           "NEUROALIGN_CACHE_DIR": str(tmp / "cache"), "NEUROALIGN_NO_DEMO": "1",
           "NEUROALIGN_IMPORT_ROOTS": str(files["incoming"])}
    with streamlit_server(env, tmp / "streamlit.log") as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": WIDTHS[0], "height": 900})
        page.goto(f"{base}/", timeout=120_000)
        page.get_by_role("heading", name="neuroalign", exact=True).first.wait_for(timeout=120_000)
        wait_idle(page, 120_000)
        page.locator('[data-testid="stSidebarNav"]').get_by_text("Subjects", exact=True).click()
        page.get_by_role("heading", name="Subjects", exact=True).first.wait_for(timeout=120_000)
        wait_idle(page, 60_000)
        page.get_by_role("tab", name="Import a subject").click()
        page.wait_for_timeout(500)
        page.get_by_role("radio", name="NWB file (.nwb)").check(force=True)
        wait_idle(page)
        _shots(page, out, "nwb_empty")
        # an NWB upload: its choices, then its preview
        _upload(page, 0, files["nwb"])
        _shots(page, out, "nwb_choices", full=True)
        _check(page)
        page.get_by_text("Ready to import as").first.wait_for(timeout=120_000)
        _shots(page, out, "nwb_preview", full=True, anchor="Ready to import as")
        # a bad NWB file
        page.evaluate("document.querySelector('[data-testid=\"stMain\"]').scrollTo(0, 0)")
        _remove_uploads(page)
        _upload(page, 0, files["bad"])
        _shots(page, out, "nwb_bad")
        # an NWB file without stimulus images
        _remove_uploads(page)
        _upload(page, 0, files["bare"])
        _shots(page, out, "nwb_no_templates")
        _upload(page, 1, files["stimuli"])
        _check(page)
        _shots(page, out, "nwb_no_templates_checked", full=True)
        _remove_uploads(page)
        # the server's import folders
        page.get_by_role("radio", name="The server (import folders)").check(force=True)
        wait_idle(page)
        page.wait_for_timeout(800)
        _shots(page, out, "server_list")
        page.locator('[data-testid="stSelectbox"]').filter(has_text="Recording").locator("input").first.click()
        page.wait_for_timeout(500)
        _shots(page, out, "server_list_open")
        page.get_by_role("option", name="sub-12").first.click()
        wait_idle(page, 60_000)
        page.wait_for_timeout(800)
        _shots(page, out, "server_nwb", full=True)
        _check(page)
        page.get_by_text("Ready to import as").first.wait_for(timeout=120_000)
        _shots(page, out, "server_preview", anchor="Ready to import as")
        page.get_by_role("button", name="Save subject").first.click()
        page.wait_for_timeout(1000)
        wait_idle(page, 60_000)
        page.wait_for_timeout(1000)
        page.evaluate("document.querySelector('[data-testid=\"stMain\"]').scrollTo(0, 0)")
        _shots(page, out, "server_saved")
        page.get_by_role("tab", name="Browse").click()
        page.wait_for_timeout(1000)
        _shots(page, out, "browse_after", full=True)
        browser.close()
    print(tmp)


if __name__ == "__main__":
    main(sys.argv[1])
