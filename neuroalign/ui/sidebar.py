"""The shared sidebar: data root, device, running jobs with a mini progress bar."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from neuroalign import paths
from neuroalign.text import markdown_code, markdown_literal as md
from neuroalign.ui import jobs_view, loaders

LOGO = Path(__file__).resolve().parents[2] / "assets" / "logo.png"


def render_sidebar() -> None:
    """Draw the sidebar (call once per script run, from app.py)."""
    if LOGO.is_file():
        st.logo(str(LOGO), size="large")
    with st.sidebar:
        st.caption(f"**Data** {markdown_code(paths.data_dir())}")
        st.caption(f"**Runs** {markdown_code(paths.runs_dir())}")
        try:
            device = loaders.device_description()
        except Exception as exc:  # noqa: BLE001 - a broken device probe must not take the app down
            device = f"unknown ({exc})"
        st.caption(f"**Device** {md(device)}")
        running = bool(jobs_view.active(jobs_view.snapshots()))
        _jobs_fragment(run_every=2.0 if running else None)


def _jobs_fragment(run_every: float | None) -> None:
    @st.fragment(run_every=run_every)
    def jobs_box() -> None:
        every = jobs_view.snapshots()
        snaps = jobs_view.active(every)
        if not snaps:
            st.caption("No training running.")
            return
        st.caption(f"**Training** ({jobs_view.counts_text(every)})")
        for s in snaps:
            st.progress(min(max(float(s.progress or 0.0), 0.0), 1.0),
                        text=f"{md(s.subject)}: {jobs_view.progress_text(s, every)}")

    jobs_box()
