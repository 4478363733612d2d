"""The Runs page's Export: a trained run's embeddings, splits and per-neuron scores as .npz or .mat,
the bytes built by `neuroalign.export`, or the per-neuron table as .csv (`neuroalign.export_nwb`: with
the NWB series, plane and ROI id of each neuron for a subject imported from NWB, ready to add back to
the NWB file) -- what `python -m neuroalign export` writes.

Encoding every image takes seconds, so the file is prepared on a click (with a spinner, errors in one
line) and kept in the session for that run, format and subject until the run's files change; the
download button then hands over the prepared bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from neuroalign import paths
from neuroalign.text import markdown_literal as md
from neuroalign.ui import keys, loaders

FORMATS = {"mat": "MATLAB (.mat)", "npz": "NumPy (.npz)", "csv": "Neuron table (.csv)"}
SHARED_KINDS = ("shared", "adapted")


def _subjects(config: dict[str, Any]) -> list[str]:
    if config.get("kind") in SHARED_KINDS:
        return [str(s.get("name")) for s in config.get("subjects") or [] if isinstance(s, dict)]
    subject = config.get("subject")
    return [str(subject.get("name"))] if isinstance(subject, dict) else []


def blocker(run_dir: Path, config: dict[str, Any]) -> str | None:
    """Why the run cannot be exported (None when it can)."""
    if config.get("kind") in SHARED_KINDS:
        return None if (run_dir / "shared_model.npz").is_file() else "This shared run has no saved model yet."
    if not (run_dir / "best.pt").is_file():
        return "Export needs a trained model: this run has no best.pt yet."
    return None


def section(run_dir: Path, config: dict[str, Any]) -> None:
    """Format (and subject of a shared run) pickers, Prepare, and the download of the prepared file."""
    why = blocker(run_dir, config)
    subjects = _subjects(config)
    st.caption("Export: the run's shared-space embedding of every image and response (and repeat), each image's "
               "split, and the per-neuron scores (FEVE, importance, reliability), as one file for MATLAB or "
               "NumPy; or the per-neuron table as CSV, with each neuron's NWB ROI id when the subject came from "
               "an NWB file (README: NWB files; also `python -m neuroalign export`).")
    with st.container(horizontal=True, vertical_alignment="bottom"):
        fmt = st.segmented_control("Export format", list(FORMATS), format_func=FORMATS.get, default="mat",
                                   key=keys.RUNS_EXPORT_FORMAT, disabled=why is not None) or "mat"
        subject = None
        if len(subjects) > 1:
            subject = st.selectbox("Subject", subjects, key=keys.RUNS_EXPORT_SUBJECT, format_func=md,
                                   disabled=why is not None)
        prepare = st.button("Prepare export", key=keys.RUNS_EXPORT_PREPARE, icon=":material/package_2:",
                            disabled=why is not None, help=why or (
                                "Encode every image and response of the run's subject in its shared space and "
                                "collect the splits, image ids and per-neuron scores (FEVE, importance, "
                                "reliability) into one file."))
    if why is not None:
        st.caption(why)
        return
    want = (str(run_dir), fmt, subject, loaders.run_stamp(run_dir))
    ready = st.session_state.get(keys.RUNS_EXPORT_READY)
    if prepare:
        from neuroalign.export import export_run, to_bytes

        ready = None
        st.session_state.pop(keys.RUNS_EXPORT_READY, None)
        which = subject if config.get("kind") in SHARED_KINDS else None
        try:
            if fmt == "csv":
                from neuroalign.export_nwb import neuron_table, table_bytes

                with st.spinner("Collecting the per-neuron scores…"):
                    table = neuron_table(run_dir, subject=which, data_dir=paths.data_dir())
                    label = which or (_subjects(config) or ["run"])[0]
                    ready = (want, table_bytes(table), f"{run_dir.name}_{label}_neurons.csv")
            else:
                with st.spinner("Encoding every image and response…"):
                    arrays = export_run(run_dir, subject=which, data_dir=paths.data_dir(), cache_dir=paths.cache_dir())
                    ready = (want, to_bytes(arrays, fmt), f"{run_dir.name}_{arrays['subject']}.{fmt}")
        except (ValueError, FileNotFoundError, OSError, MemoryError) as exc:
            st.error(f"Cannot export {md(run_dir.name)}: {md(exc)}", icon=":material/error:")
        else:
            st.session_state[keys.RUNS_EXPORT_READY] = ready
    if ready is not None and ready[0] == want:
        _, data, name = ready
        size = f"{len(data) / 1e6:.1f} MB" if len(data) >= 1e6 else f"{max(1, round(len(data) / 1e3))} kB"
        st.download_button(f"Download {md(name)} ({size})", data=data, file_name=name,
                           mime="application/octet-stream", key=keys.RUNS_EXPORT_DOWNLOAD, on_click="ignore",
                           icon=":material/download:", type="primary")
