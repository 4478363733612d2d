"""Home: what this is, subjects and runs at a glance, best result per subject, next steps."""

import streamlit as st

from neuroalign.text import markdown_literal as md
from neuroalign.ui import guards, home_view, jobs_view, loaders, nav, shell, tables
from neuroalign.ui.entry import page_entry

page_entry()
st.title("neuroalign")
st.markdown(
    "Train a model that maps **natural images** and the **population responses of visual-cortex neurons** "
    "into one shared 16×64 feature map, then *look* at how well they align. "
    "A good model identifies which image a neural response belongs to far above chance, "
    "and draws matching feature maps from both sides."
)

try:
    subjects = loaders.list_subjects()
    table = loaders.runs_table()
except (ValueError, FileNotFoundError, OSError) as exc:
    st.error(f"Cannot read the data or runs folder: {md(exc)}")
    st.stop()

runs = table.frame
guards.show_run_problems(table.problems)
jobs = jobs_view.snapshots()
running, waiting = jobs_view.running(jobs), jobs_view.queued(jobs)
finished = runs[runs["top1 img→neu"].notna()] if not runs.empty else runs
c1, c2, c3, c4 = st.columns(4)
c1.metric("Subjects", len(subjects))
c2.metric("Runs", len(runs))
c3.metric("Finished with results", len(finished))
c4.metric("Training now", len(running), delta=f"{len(waiting)} queued" if waiting else None, delta_color="off",
          delta_arrow="off", help="Jobs training or evaluating now; queued ones start when a slot is free.")

st.subheader("Best result per subject")
best = tables.best_per_subject(runs)
if best.empty:
    st.info("No finished run yet: train one to see test identification accuracy here.")
else:
    home_view.render_best(best)
    st.caption("Test top-1 of each subject's best run (by image → neural), with the gap to the best linear readout "
               "of that run (the best of its ridge baselines); the Retrieval page has every baseline and the 95 % "
               "intervals.")
with st.container(horizontal=True):
    st.page_link(nav.TRAIN.path, label="Train a model", icon=nav.TRAIN.icon)
    if not best.empty:
        st.page_link(nav.RETRIEVAL.path, label="Browse retrieval results", icon=nav.RETRIEVAL.icon)

st.subheader("Subjects")
if subjects:
    st.dataframe(tables.subjects_frame(subjects)[["subject", "images", "neurons", "repeats", "simulated"]],
                 hide_index=True, column_config=tables.SUBJECT_COLUMNS, key="home.subjects")
elif shell.demo_in_progress():
    st.info("The simulated demo subjects are being created (progress above); they appear here when ready.",
            icon=":material/hourglass_top:")
else:
    st.info("No subjects yet.")
st.page_link(nav.SUBJECTS.path, label="Browse or import subjects", icon=nav.SUBJECTS.icon)
