"""Runs: every run with its config and key metrics; compare curves, download artifacts, delete."""

import io
from pathlib import Path

import pandas as pd
import streamlit as st

from neuroalign import plots
from neuroalign.ui import guards, keys, loaders, nav, resume, shared_view, tables
from neuroalign.text import markdown_code, markdown_literal as md
from neuroalign.ui import export_view
from neuroalign.ui.entry import page_entry
from neuroalign.ui.summary import RunSummary

page_entry()
st.title("Runs")
try:
    table = loaders.runs_table()
except (ValueError, FileNotFoundError, OSError) as exc:
    st.error(f"Cannot read the runs folder: {md(exc)}")
    st.stop()
df = table.frame
if df.empty:
    st.info("No runs yet.")
    st.page_link(nav.TRAIN.path, label="Train a model", icon=nav.TRAIN.icon)
    st.stop()
guards.show_run_problems(table.problems)

# ---- table with filters ------------------------------------------------------------------------
c = st.columns([2, 2, 2, 3])
subjects = c[0].multiselect("Subject", sorted(df["subject"].unique()), key=keys.RUNS_FILTER_SUBJECT, placeholder="all")
states = c[1].multiselect("State", sorted(df["state"].unique()), key=keys.RUNS_FILTER_STATE, placeholder="all")
sort_by = c[2].selectbox("Sort by", ["created", "top1 img→neu", "top1 neu→img", "mean rank", "subject"],
                         key=keys.RUNS_SORT)
extra = c[3].multiselect("More columns", tables.RUN_OPTIONAL_COLUMNS, key="runs.columns", placeholder="none",
                         format_func=lambda col: "run folder" if col == "run" else col,
                         help="The table shows the main columns (narrow enough for a small window); add any of these.")
view = df
if subjects:
    view = view[view["subject"].isin(subjects)]
if states:
    view = view[view["state"].isin(states)]
view = view.sort_values(sort_by, ascending=sort_by in ("mean rank", "subject"), na_position="last")
shown = [*tables.RUN_DEFAULT_COLUMNS, *extra] + (["problem"] if view["problem"].astype(bool).any() else [])
st.dataframe(view, hide_index=True, column_config=tables.RUN_COLUMNS, column_order=shown, key=keys.RUNS_TABLE)
if view.empty:
    st.info("No run matches the filters.")
    st.stop()

# ---- compare curves ----------------------------------------------------------------------------
st.subheader("Compare loss curves")
runs_by_path = dict(zip(view["path"], view["run"]))
# shared runs (one model over several subjects) are fitted in closed form: they have no loss curves
curve_view = view[~view["kind"].isin(("shared", "adapted"))] if "kind" in view else view
curve_runs = dict(zip(curve_view["path"], curve_view["run"]))
default = list(curve_view["path"][:2])
picked = st.multiselect("Runs", list(curve_runs), default=default, format_func=curve_runs.get,
                        key=keys.RUNS_PICK)
if len(curve_runs) < len(runs_by_path):
    st.caption("Shared runs are fitted in closed form and have no loss curves; they are not offered here.")
if picked:
    c = st.columns([3, 1])
    smoothing = c[0].slider("Smoothing", 0.0, 0.99, 0.6, 0.01, key=keys.RUNS_SMOOTHING)
    log_y = c[1].toggle("Log scale", key=keys.RUNS_LOG_Y)
    histories = {}
    for p in picked:
        try:
            histories[curve_runs[p]] = loaders.run_summary(p).metrics
        except (ValueError, FileNotFoundError, OSError) as exc:
            st.error(f"Cannot read metrics of {md(curve_runs[p])}: {md(exc)}")
    st.plotly_chart(plots.loss_curves(histories, smoothing=smoothing, log_y=log_y), key="runs.curves")

# ---- one run: open, download, delete -----------------------------------------------------------
st.subheader("One run")
chosen = st.selectbox("Run", list(runs_by_path), format_func=runs_by_path.get, key=keys.RUNS_ONE,
                      index=list(runs_by_path).index(st.session_state[keys.SELECTED_RUN])
                      if st.session_state.get(keys.SELECTED_RUN) in runs_by_path else 0)
st.session_state[keys.SELECTED_RUN] = chosen
run_dir = Path(chosen)
row = view[view["path"] == chosen].iloc[0]
try:
    chosen_summary = loaders.run_summary(chosen)
except (ValueError, FileNotFoundError, OSError):  # its message is in the row's problem, shown below
    chosen_summary = RunSummary()
if row["problem"]:
    st.error(f"Run {md(run_dir.name)}: {md(row['problem'])}", icon=":material/error:")
if row["state"] == "failed":
    st.error(f"This run failed: {md(chosen_summary.status_message)}")
resume.show_errors()
if row["state"] in resume.RESUMABLE_STATES and row["state"] != "failed":  # failed: its error is shown above
    with st.container(horizontal=True, vertical_alignment="center"):
        resume.button(run_dir, row["state"], keys.RUNS_RESUME)
        st.caption(f"This run is {md(row['state'])}: {md(chosen_summary.status_message)}")
elif row["state"] == "failed":
    resume.button(run_dir, row["state"], keys.RUNS_RESUME)
shared_names = loaders.shared_subject_names(chosen_summary.config) \
    if loaders.is_shared_config(chosen_summary.config) else []
if shared_names and row["state"] == "finished":  # a shared run: one row per subject (its own results.json)
    kind = chosen_summary.kind
    st.markdown("**Per subject** — one model over " + ", ".join(markdown_code(n) for n in shared_names)
                if kind == "shared" else "**Adapted** from "
                f"{markdown_code(Path(str(chosen_summary.config.get('adapted_from'))).name)}"
                " (only this subject's read-in was fitted)")
    try:
        st.dataframe(shared_view.subjects_frame(run_dir, shared_names), hide_index=True,
                     column_config=shared_view.SUBJECT_COLUMNS, key="runs.shared_subjects")
    except (ValueError, FileNotFoundError, OSError) as exc:
        st.error(f"Cannot read the per-subject results of {md(run_dir.name)}: {md(exc)}")
    st.caption("Test top-1 of each subject on its own test images with the 95 % interval, and the best ridge "
               "baseline on the same images. The Retrieval, Feature maps and Neurons pages open each subject; "
               "Retrieval also shows cross-subject retrieval.")
choice = tables.image_choice_frame(chosen_summary.config)
if choice is not None:
    n_scored = int(choice["val MRR"].notna().sum())
    with st.expander(f"How the image model was chosen (auto: {n_scored} of {len(choice)} candidates scored on the "
                     "validation images)"):
        st.dataframe(choice, hide_index=True, column_config=tables.IMAGE_CHOICE_COLUMNS, key="runs.image_choice")
        st.caption("Each candidate's frozen features with the closed-form start fitted on the train images and "
                   "scored on the validation images (the test images play no part); the best was trained. "
                   "Candidates not started by half the time budget are skipped. The Image models page "
                   "profiles every layer of every model.")
start_line = tables.start_caption(chosen_summary.results)
if start_line is not None:
    st.caption(start_line)
links = st.columns(3)
if pd.notna(row["top1 img→neu"]) or (shared_names and row["state"] == "finished"):
    links[0].page_link(nav.RETRIEVAL.path, label="Open in Retrieval", icon=nav.RETRIEVAL.icon)
    links[1].page_link(nav.FEATURE_MAPS.path, label="Open in Feature maps", icon=nav.FEATURE_MAPS.icon)

downloads = [("best.pt", "Checkpoint (best.pt)", "application/octet-stream"),
             ("results.json", "results.json", "application/json"),
             ("test_result.mat", "test_result.mat", "application/octet-stream"),
             ("loss_data.mat", "loss_data.mat", "application/octet-stream"),
             ("config.json", "config.json", "application/json")]
if shared_names:  # a shared run's own files (training.shared_runs)
    downloads = [("shared_model.npz", "Shared model (npz)", "application/octet-stream"),
                 ("shared_results.json", "shared_results.json", "application/json"),
                 ("config.json", "config.json", "application/json")]
metrics = chosen_summary.metrics
buf = io.StringIO()
pd.DataFrame(metrics).to_csv(buf, index=False)
with st.container(horizontal=True):
    for fname, label, mime in downloads:
        path = run_dir / fname
        st.download_button(label, data=(lambda p=path: p.read_bytes()), file_name=f"{run_dir.name}_{fname}",
                           mime=mime, disabled=not path.is_file(), key=f"runs.download.{fname}", on_click="ignore",
                           icon=":material/download:")
    st.download_button("Metrics CSV", data=buf.getvalue(), file_name=f"{run_dir.name}_metrics.csv",
                       mime="text/csv", disabled=not metrics, key="runs.download.csv", on_click="ignore",
                       icon=":material/download:")
export_view.section(run_dir, chosen_summary.config)

with st.expander("Delete this run"):
    sure = st.checkbox(f"Yes, delete {md(run_dir.name)} and all its files",
                       key=keys.delete_confirm(keys.RUNS_DELETE_CONFIRM, run_dir.name))  # never carried over
    if st.button("Delete run", key=keys.RUNS_DELETE, disabled=not sure, type="primary"):
        from neuroalign.training.runs import delete_run

        try:
            delete_run(run_dir)
        except (ValueError, FileNotFoundError, OSError) as exc:
            st.error(f"Could not delete {md(run_dir.name)}: {md(exc)}")
        else:
            loaders.invalidate_runs()
            st.session_state.pop(keys.SELECTED_RUN, None)
            st.toast(f"Deleted {md(run_dir.name)}")
            st.rerun()
