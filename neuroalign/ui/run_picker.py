"""Choosing a finished run (shared by Retrieval and Feature maps) and loading what it points to."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import streamlit as st

from neuroalign.text import markdown_literal as md
from neuroalign.ui import guards, keys, loaders, tables
from neuroalign.ui.summary import RunSummary

logger = logging.getLogger(__name__)


def run_kind(run_dir: Any) -> str | None:
    """config.json's "kind" of a run ("shared", "adapted"; None for a single-subject run)."""
    try:
        return loaders.run_summary(run_dir).kind
    except Exception:  # noqa: BLE001 - a damaged run is labelled by its folder alone
        return None


KIND_LABELS = {"shared": "shared model", "adapted": "adapted"}


def _label(run: Any) -> str:
    top1 = (getattr(run, "metrics", None) or {}).get("test_top1_image_to_neural")
    score = f" · top-1 {top1:.2f}" if isinstance(top1, (int, float)) else ""
    kind = KIND_LABELS.get(run_kind(run.path))
    return f"{run.subject}{f' ({kind})' if kind else ''} · {run.run_id}{score}"


def _remember_subject(widget_key: str) -> None:
    st.session_state[keys.SHARED_SUBJECT] = st.session_state[widget_key]


def pick_shared_subject(run_id: str, summary: RunSummary, widget_key: str) -> str:
    """Selectbox over the subjects of a shared run (default: the subject picked on another page)."""
    names = loaders.shared_subject_names(summary.config)
    if not names:
        st.error(f"Run {md(run_id)}: config.json lists no subjects; expected the files train --shared writes.")
        st.stop()
    wanted = st.session_state.get(keys.SHARED_SUBJECT)
    if wanted in names and st.session_state.get(widget_key) != wanted:
        st.session_state[widget_key] = wanted
    elif st.session_state.get(widget_key) not in names:
        st.session_state[widget_key] = names[0]
    kind = summary.kind
    help_text = ("One model over these subjects: a shared image side and one read-in per subject. Every result "
                 "below is the picked subject's (its own test images, baselines and intervals)."
                 if kind == "shared" else "The new subject adapted to a shared run (only its read-in was fitted).")
    chosen = st.selectbox("Subject in this shared run" if kind == "shared" else "Subject", names, key=widget_key,
                          on_change=_remember_subject, args=(widget_key,), help=help_text,
                          disabled=len(names) == 1)
    st.session_state[keys.SHARED_SUBJECT] = chosen
    return chosen


SHARED_OUTPUTS = ("test_indices", "similarity", "image_embedding", "neural_embedding")


def _remember(widget_key: str) -> None:
    """The user picked a run: make it the run every page opens with."""
    st.session_state[keys.SELECTED_RUN] = st.session_state[widget_key]


def pick_finished_run(widget_key: str) -> tuple[Any, dict[str, Any], dict[str, np.ndarray]]:
    """Selectbox over finished runs (default: the run picked on another page); returns
    (RunInfo, run summary, test outputs). Stops the page with a message when there is nothing to show."""
    runs = guards.require_finished_runs()
    by_path = {str(tables.run_path(r)): r for r in runs}
    options = list(by_path)
    wanted = st.session_state.get(keys.SELECTED_RUN)
    if wanted in by_path and st.session_state.get(widget_key) != wanted:
        st.session_state[widget_key] = wanted
    elif st.session_state.get(widget_key) not in by_path:
        st.session_state[widget_key] = options[0]
    chosen = st.selectbox("Run", options, key=widget_key, format_func=lambda p: _label(by_path[p]),
                          on_change=_remember, args=(widget_key,))
    st.session_state[keys.SELECTED_RUN] = chosen
    needed = ("test_indices", "image_maps", "neural_maps", "similarity", "ssim")
    try:
        summary = loaders.run_summary(chosen)
        if loaders.is_shared_config(summary.config):  # a shared run: one of its subjects
            name = pick_shared_subject(by_path[chosen].run_id, summary, widget_key + ".subject")
            summary = loaders.shared_subject_summary(chosen, name)
            outputs = loaders.shared_subject_outputs(chosen, name)
            needed = SHARED_OUTPUTS
        else:
            outputs = loaders.run_test_outputs(chosen)
    except Exception as exc:  # noqa: BLE001 - a damaged run folder must not take the page down
        logger.warning("cannot read run %s: %s", chosen, exc)
        st.error(f"Cannot read run {md(by_path[chosen].run_id)}: {type(exc).__name__}: {md(exc)}")
        st.stop()
    missing = [k for k in needed if k not in (outputs or {})]
    if outputs and missing:
        st.error(f"Run {md(by_path[chosen].run_id)}: test_outputs.npz lacks {md(', '.join(missing))}; re-evaluate the "
                 "run.")
        st.stop()
    if not outputs:
        st.error(f"Run {md(by_path[chosen].run_id)} has no test outputs (test_outputs.npz); evaluate it first.")
        st.stop()
    return by_path[chosen], summary, outputs


def stimuli_for(summary: RunSummary, indices: np.ndarray) -> np.ndarray | None:
    """The run subject's stimuli at `indices` (n, 1, H, W), or None (with a warning) when the subject
    is no longer in the data root or has changed since the run."""
    subject_meta = summary.subject
    name = summary.subject_name
    if not name:
        st.warning("This run does not record its subject; stimuli cannot be shown.")
        return None
    try:
        subject = loaders.load_subject(name)
    except (ValueError, FileNotFoundError, OSError) as exc:
        st.warning(f"Subject {md(name)} is not available in the data folder ({md(exc)}); showing indices only.")
        return None
    expected = subject_meta.get("data_hash")
    if expected and expected != subject.data_hash:
        st.warning(f"Subject {md(name)} changed since this run was trained; stimuli may not match.")
    idx = np.asarray(indices, dtype=np.int64)
    if idx.size and idx.max() >= subject.n_images:
        st.warning(f"Subject {md(name)} has fewer images than the run's test indices; stimuli cannot be shown.")
        return None
    return subject.images[idx]
