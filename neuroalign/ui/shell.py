"""What app.py sets up around every page: page config, logging, first-start demo data, navigation."""

from __future__ import annotations

import logging
import os

import streamlit as st

from neuroalign import paths
from neuroalign.ui import keys, nav

logger = logging.getLogger(__name__)


def configure_page() -> None:
    """Page config and logging (idempotent)."""
    st.set_page_config(page_title="neuroalign", page_icon=":material/neurology:", layout="wide")
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@st.cache_resource(show_spinner=False)
def _demo_attempted(root: str) -> dict:
    """Process-wide marker: the demo is created at most once per data root and server process."""
    return {"done": False}


def ensure_demo() -> None:
    """On first start with an empty data root, create the simulated demo subjects with a visible status.

    Skipped when $NEUROALIGN_NO_DEMO is set (tests, CI). Attempted once per data root and process,
    so deleting every subject later does not bring the demo back. Failures are shown, never raised.
    """
    root = paths.data_dir()
    if os.environ.get(keys.NO_DEMO_ENV, "") not in ("", "0"):
        return
    marker = _demo_attempted(str(root))
    if marker["done"]:
        return
    marker["done"] = True
    if root.is_dir() and any(root.iterdir()):
        return
    with st.status("First start: creating the simulated demo subjects…", expanded=True) as status:
        st.write(f"Writing to `{root}` (once; takes a minute).")
        try:
            from neuroalign.data.store import SubjectStore

            names = SubjectStore(root).ensure_demo()
        except Exception as exc:  # noqa: BLE001 - the app must stay up; the CLI can retry
            logger.exception("demo creation failed")
            status.update(label=f"Could not create the demo subjects: {exc}", state="error")
            return
        status.update(label=f"Demo subjects ready: {', '.join(names) or 'none needed'}", state="complete",
                      expanded=False)


def pages() -> tuple[nav.PageSpec, ...]:
    """`nav.PAGES` with the Neurons page after Feature maps (until nav.py lists it itself)."""
    from neuroalign.ui.neurons_view import PAGE as NEURONS

    if NEURONS in nav.PAGES:
        return nav.PAGES
    at = nav.PAGES.index(nav.FEATURE_MAPS) + 1
    return (*nav.PAGES[:at], NEURONS, *nav.PAGES[at:])


def navigation() -> st.Page:
    """`st.navigation` over the dashboard's pages (`pages()`); returns the selected page."""
    return st.navigation([st.Page(p.path, title=p.title, icon=p.icon, default=p is nav.HOME) for p in pages()])
