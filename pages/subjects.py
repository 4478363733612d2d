"""Subjects: the table, one subject's stimuli and response statistics, import and delete."""

import numpy as np
import streamlit as st

from neuroalign import plots
from neuroalign.ui import import_view, keys, loaders, shell, tables
from neuroalign.text import markdown_literal as md, printable
from neuroalign.ui.entry import page_entry

page_entry()
st.title("Subjects")

try:
    store = loaders.subject_store()
    subjects = loaders.list_subjects()
except (ValueError, FileNotFoundError, OSError) as exc:
    st.error(f"Cannot read the data folder: {md(exc)}")
    st.stop()



def _code(text: str) -> str:
    """A file name as inline code (shown literally), or escaped when it holds a backtick."""
    return f"`{printable(text)}`" if "`" not in text else md(text)


browse, add, remove = st.tabs(["Browse", "Import a subject", "Delete"])

# --------------------------------------------------------------------------------------------
with browse:
    if not subjects and shell.demo_in_progress():
        st.info("The simulated demo subjects are being created (progress above); they appear here when ready.",
                icon=":material/hourglass_top:")
    elif not subjects:
        st.info("No subjects in the data folder yet. Import one in the next tab, or run "
                "`python -m neuroalign demo-data` to create the simulated demo subjects.")
    else:
        st.dataframe(tables.subjects_frame(subjects), hide_index=True, column_config=tables.SUBJECT_COLUMNS,
                     key="subjects.table")
        names = [s.name for s in subjects]
        if st.session_state.get(keys.SELECTED_SUBJECT) in names:  # e.g. the subject just imported
            st.session_state[keys.SUBJECT_PICK] = st.session_state[keys.SELECTED_SUBJECT]
        name = st.selectbox("Subject", names, key=keys.SUBJECT_PICK)
        st.session_state[keys.SELECTED_SUBJECT] = name
        try:
            with st.spinner(f"Loading {name}…"):
                subject = loaders.load_subject(name)
                stats = loaders.subject_stats(name)
        except (ValueError, FileNotFoundError, OSError) as exc:
            st.error(f"Cannot load subject {md(name)}: {md(exc)}")
        else:
            h, w = subject.image_shape
            c = st.columns(4)
            c[0].metric("Images", subject.n_images)
            c[1].metric("Neurons", subject.n_neurons)
            c[2].metric("Repeats", subject.repeats.shape[0] if subject.repeats is not None else 1)
            c[3].metric("Image size", f"{h}×{w}")
            info = next((i for i in subjects if i.name == name), None)
            if info is not None and getattr(info, "source_files", ()):
                stored = getattr(info, "stored_format", "") or info.format
                source_format = info.format if info.format.startswith("NWB") else f"MAT {info.format}"
                st.caption(f"Imported from {' + '.join(_code(f) for f in info.source_files)} ({md(source_format)}"
                           + (f", stored as MAT {stored}" if stored != info.format else "") + ")"
                           + import_view.nwb_caption(info.path))

            st.subheader("Stimuli")
            count = st.select_slider("How many", options=[8, 16, 32, 64], value=16, key=keys.GRID_COUNT)
            idx = np.unique(np.linspace(0, subject.n_images - 1, num=min(count, subject.n_images)).astype(int))
            cols = st.columns(4)
            for j, i in enumerate(idx):
                cols[j % 4].image(plots.as_display_image(subject.images[i]),
                                  caption=f"image {int(subject.image_ids[i])}", width="stretch")

            st.subheader("Responses")
            left, right = st.columns(2)
            left.plotly_chart(plots.neuron_stats(stats["mean"], stats["variance"], stats["reliability"]),
                              key="subjects.stats")
            if stats["reliability"] is not None:
                rel = stats["reliability"]
                right.plotly_chart(plots.histogram(rel, "Split-half reliability per neuron", "reliability",
                                                   vline=float(np.nanmedian(rel)) if np.isfinite(rel).any() else None,
                                                   vline_label="median"), key="subjects.reliability")
            else:
                right.info("One response per image: reliability needs repeated presentations.")
            st.plotly_chart(plots.response_raster(subject.responses, stats["raster_images"], stats["raster_neurons"]),
                            key="subjects.raster")

# --------------------------------------------------------------------------------------------
with add:
    import_view.render(store)

# --------------------------------------------------------------------------------------------
with remove:
    if not subjects:
        st.info("Nothing to delete.")
    else:
        victim = st.selectbox("Subject to delete", [s.name for s in subjects], key=keys.DELETE_PICK)
        n_runs = tables.runs_of_subject(loaders.list_runs(), victim)
        st.caption(f"{md(victim)} has {n_runs} run{'' if n_runs == 1 else 's'} in the runs folder. "
                   + ("They are kept (Runs page), but Retrieval and Feature maps can no longer show their stimuli."
                      if n_runs else "Only its data files are removed."))
        sure = st.checkbox(f"Yes, delete {md(victim)} and its data files",
                           key=keys.delete_confirm(keys.DELETE_CONFIRM, victim))  # never carried over
        if st.button("Delete subject", key=keys.DELETE_BUTTON, disabled=not sure):
            try:
                store.delete(victim)
            except (ValueError, FileNotFoundError, OSError) as exc:
                st.error(f"Could not delete {md(victim)}: {md(exc)}")
            else:
                if st.session_state.get(keys.SELECTED_SUBJECT) == victim:
                    st.session_state.pop(keys.SELECTED_SUBJECT)
                st.toast(f"Deleted {md(victim)}")
                st.rerun()
