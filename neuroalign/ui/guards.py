"""Prerequisite checks for pages: explain what is missing, link to where to fix it, stop."""

from __future__ import annotations

from typing import Mapping

import streamlit as st

from neuroalign.text import markdown_literal as md
from neuroalign.ui import loaders, nav


def require_subjects() -> list:
    """SubjectInfo list, or an info box linking to Subjects and `st.stop()` when there is none."""
    try:
        subjects = loaders.list_subjects()
    except (ValueError, OSError) as exc:
        st.error(f"Cannot read the data folder: {md(exc)}")
        st.stop()
    if not subjects:
        from neuroalign.ui.shell import demo_in_progress

        if demo_in_progress():
            st.info("The simulated demo subjects are being created (progress above); this page fills in when "
                    "they are ready.", icon=":material/hourglass_top:")
            st.stop()
        st.info("No subjects yet. Import your recordings (or create the demo subjects) first.")
        st.page_link(nav.SUBJECTS.path, label="Go to Subjects", icon=nav.SUBJECTS.icon)
        st.stop()
    return subjects


def require_finished_runs() -> list:
    """RunInfo list of finished runs with results, or an info box linking to Train and `st.stop()`."""
    try:
        runs = [r for r in loaders.list_runs() if _has_results(r)]
    except (ValueError, OSError) as exc:
        st.error(f"Cannot read the runs folder: {md(exc)}")
        st.stop()
    if not runs:
        st.info("No finished run yet. Train a model first; its results appear here when it ends.")
        st.page_link(nav.TRAIN.path, label="Go to Train", icon=nav.TRAIN.icon)
        st.stop()
    return runs


def _has_results(run) -> bool:
    from neuroalign.training import runs as runs_io

    if (run.path / runs_io.RESULTS_FILE).is_file() and (run.path / runs_io.TEST_OUTPUTS).is_file():
        return True
    # a shared run (training.shared_runs): shared_results.json is written once every subject is evaluated
    return run.state == "finished" and (run.path / loaders.SHARED_RESULTS).is_file()


def show_run_problems(problems: Mapping[str, str], limit: int = 3) -> None:
    """One st.error per damaged run (`run id -> message`), the first `limit` of them, then a count."""
    items = list(problems.items())
    for run_id, message in items[:limit]:
        st.error(f"Run {md(run_id)}: {md(message)}", icon=":material/error:")
    if len(items) > limit:
        st.error(f"{len(items) - limit} more runs have damaged files; the Runs page lists them in its problem column.",
                 icon=":material/error:")


def show_summary_problems(run_id: str, summary: Mapping) -> None:
    """st.error for the damaged files of one run (`loaders.run_summary(...)["problems"]`), if any."""
    problems = summary.get("problems") or {}
    if problems:
        show_run_problems({run_id: " | ".join(problems.values())})
