"""The Resume button of the Runs page and the Train page's job cards.

Offered for runs that ended without finishing (`jobs_view.RESUMABLE_STATES`: stopped, interrupted by
the server's exit or a kill, failed) and hold a `last.pt`; a click queues a job that continues the run
in the same folder (`jobs_view.request_resume`). When the run cannot be resumed right now (no
`last.pt`, a job is on it) the button is shown disabled with the reason as its tooltip.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from neuroalign.text import markdown_literal as md
from neuroalign.ui import jobs_view, keys, loaders

RESUMABLE_STATES = jobs_view.RESUMABLE_STATES


def _resume(run_dir: str) -> None:
    """Button callback (runs before the rerun, so the page already shows the queued job)."""
    name = Path(run_dir).name
    try:
        job_id = jobs_view.request_resume(run_dir)
    except (ValueError, FileNotFoundError, OSError) as exc:
        st.session_state[keys.RESUME_ERRORS] = [f"Cannot resume {name}: {exc}"]
        return
    loaders.invalidate_runs()
    st.session_state.setdefault(keys.TRAIN_LAUNCHED, []).append(job_id)
    st.toast(f"Resuming {md(name)} ({job_id}); its progress is on the Train page")


def show_errors() -> None:
    """The messages of the last failed Resume click, once."""
    for message in st.session_state.pop(keys.RESUME_ERRORS, []):
        st.error(md(message))  # "Cannot resume <run>: <error>": shown as text


def button(run_dir: Any, state: str, key: str, where: Any = st, hide_blocked: bool = False) -> bool:
    """Draw Resume for a resumable run (nothing for other states, nor, with `hide_blocked`, for one that
    cannot be resumed now); True when a button was drawn."""
    if state not in jobs_view.RESUMABLE_STATES:
        return False
    blocker = jobs_view.resume_blocker(run_dir, state)
    if blocker is not None and hide_blocked:
        return False
    where.button("Resume", key=key, icon=":material/play_arrow:", disabled=blocker is not None,
                 on_click=_resume, args=(str(run_dir),),
                 help=blocker or "Continue this run from its last checkpoint (last.pt) in the same folder: "
                                 "a job is queued and shown on the Train page.")
    return True
