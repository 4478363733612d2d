"""What app.py sets up around every page: page config, logging, first-start demo data, navigation."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import streamlit as st

from neuroalign import paths, settings
from neuroalign.text import markdown_code, markdown_literal as md
from neuroalign.ui import keys, nav

logger = logging.getLogger(__name__)


FAVICON = Path(__file__).resolve().parents[2] / "assets" / "favicon.png"  # served by this server: no font CDN


def configure_page() -> None:
    """Page config and logging (idempotent). The favicon is a file shipped in assets/ (a material
    icon name would make every browser fetch it from a font CDN, and log errors when offline)."""
    st.set_page_config(page_title="neuroalign", page_icon=str(FAVICON) if FAVICON.is_file() else None,
                       layout="wide")
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


DEMO_ANNOUNCE_S = 120.0  # after the demo job ended, sessions that did not see it yet get its result this long


def demo_status():
    """The first-start demo job's status (`neuroalign.data.demo_job.DemoStatus`) when one was started in
    this server process for the data root in use, else None."""
    from neuroalign.data import demo_job

    job = demo_job.current(paths.data_dir())
    return None if job is None else job.snapshot()


def demo_in_progress() -> bool:
    """The demo subjects are being written right now (pages say so instead of "no subjects")."""
    status = demo_status()
    return status is not None and status.running


def _demo_label(status) -> str:
    done = f"{len(status.written)} of {status.total} written" if status.written else "simulating stimuli"
    return f"First start: creating the simulated demo subjects… ({done}, {int(status.elapsed_s)} s)"


def ensure_demo() -> None:
    """On first start with an empty data root, create the simulated demo subjects in a background job
    owned by the server process (`neuroalign.data.demo_job`), and show its progress on every page and
    in every browser session until it ends (then its result once per session, or its error while the
    data root is still empty).

    Skipped when $NEUROALIGN_NO_DEMO is set (tests, CI). Attempted once per data root and process,
    so deleting every subject later does not bring the demo back. Failures are shown, never raised.
    """
    if settings.get(keys.NO_DEMO_ENV):
        return
    from neuroalign.data import demo_job

    root = paths.data_dir()
    job = demo_job.start_once(root)
    if job is None:
        return
    status = job.snapshot()
    announced = st.session_state.setdefault(keys.DEMO_ANNOUNCED, set())
    if status.running:
        st.session_state[keys.DEMO_SEEN] = True
        _demo_progress(job)
    elif status.state == demo_job.FAILED:
        if _root_empty(root):
            with st.status(f"Could not create the demo subjects: {md(status.error)}", state="error", expanded=True):
                st.write("Import your recordings on the Subjects page, or create the demo subjects from a "
                         "terminal with `python -m neuroalign demo-data` (then reload).")
    elif str(status.root) not in announced and (st.session_state.pop(keys.DEMO_SEEN, False)
                                                or time.time() - (job.ended or 0) < DEMO_ANNOUNCE_S):
        announced.add(str(status.root))
        st.status(f"Demo subjects ready: {', '.join(status.names) or 'none needed'}", state="complete",
                  expanded=False)


def _root_empty(root) -> bool:
    from neuroalign.data.store import SubjectStore

    try:
        return SubjectStore(root).is_empty()
    except ValueError:
        return True


def _demo_progress(job) -> None:
    """The running demo job's status box, refreshed every 1.5 s; the whole page reruns when it ends."""

    @st.fragment(run_every=1.5)
    def demo_box() -> None:
        status = job.snapshot()
        if not status.running:
            st.rerun()  # the subjects are there (or the error is): draw the page again with them
        box = st.status(_demo_label(status), state="running", expanded=True)  # no `with`: its exit marks it done
        box.write(f"Writing to {markdown_code(status.root)} (once; about a minute, longer on a busy machine). Every page "
                  "and every browser tab shows this until they are ready, then fills in by itself.")

    demo_box()


def navigation() -> st.Page:
    """`st.navigation` over the dashboard's pages (`nav.PAGES`); returns the selected page. Leaving the
    Subjects page drops a checked but unsaved upload (its staged copies are removed)."""
    specs = nav.PAGES
    built = [st.Page(p.path, title=p.title, icon=p.icon, default=p is nav.HOME) for p in specs]
    selected = st.navigation(built)
    on_subjects = any(page is selected and spec is nav.SUBJECTS for spec, page in zip(specs, built)) \
        or getattr(selected, "url_path", None) == "subjects"
    if not on_subjects and st.session_state.get(keys.UPLOAD_STAGED) is not None:
        from neuroalign.ui import upload

        upload.discard(st.session_state.pop(keys.UPLOAD_STAGED))
    return selected
