"""Prerequisite checks for pages: explain what is missing, link to where to fix it, stop."""

from __future__ import annotations

import streamlit as st

from neuroalign.ui import loaders, nav


def require_subjects() -> list:
    """SubjectInfo list, or an info box linking to Subjects and `st.stop()` when there is none."""
    try:
        subjects = loaders.list_subjects()
    except (ValueError, OSError) as exc:
        st.error(f"Cannot read the data folder: {exc}")
        st.stop()
    if not subjects:
        st.info("No subjects yet. Import your recordings (or create the demo subjects) first.")
        st.page_link(nav.SUBJECTS.path, label="Go to Subjects", icon=nav.SUBJECTS.icon)
        st.stop()
    return subjects


def require_finished_runs() -> list:
    """RunInfo list of finished runs with results, or an info box linking to Train and `st.stop()`."""
    try:
        runs = [r for r in loaders.list_runs() if _has_results(r)]
    except (ValueError, OSError) as exc:
        st.error(f"Cannot read the runs folder: {exc}")
        st.stop()
    if not runs:
        st.info("No finished run yet. Train a model first; its results appear here when it ends.")
        st.page_link(nav.TRAIN.path, label="Go to Train", icon=nav.TRAIN.icon)
        st.stop()
    return runs


def _has_results(run) -> bool:
    from neuroalign.training import runs as runs_io

    return (run.path / runs_io.RESULTS_FILE).is_file() and (run.path / runs_io.TEST_OUTPUTS).is_file()
