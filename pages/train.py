"""Train: pick subjects, set hyperparameters, launch background jobs, watch them live."""

import streamlit as st

from neuroalign import config as cfgmod
from neuroalign import paths, plots
from neuroalign.ui import guards, jobs_view, keys, nav, train_form
from neuroalign.ui.entry import page_entry

page_entry()
st.title("Train")
subjects = guards.require_subjects()
usable = [s.name for s in subjects if not getattr(s, "error", None)]


def _apply_preset() -> None:
    """Reset every form field to the chosen preset's values."""
    st.session_state.update(train_form.widget_values(cfgmod.preset(st.session_state[keys.TRAIN_PRESET])))


def _launch() -> None:
    """Form callback (runs before the page): start one job per chosen subject, keep errors to show."""
    errors: list[str] = []
    chosen = st.session_state.get(keys.TRAIN_SUBJECTS) or []
    try:
        if not chosen:
            raise ValueError("no subject selected; pick at least one subject to train")
        config = train_form.config_from_values(st.session_state[keys.TRAIN_PRESET], dict(st.session_state))
        from neuroalign.training.device import resolve_device

        resolve_device(config.device)
    except ValueError as exc:
        st.session_state[keys.TRAIN_ERRORS] = [f"Cannot start: {exc}"]
        return
    manager = jobs_view.job_manager()
    for name in chosen:
        try:
            job_id = manager.start(name, config, paths.data_dir(), paths.runs_dir())
        except (ValueError, FileNotFoundError) as exc:
            errors.append(f"{name}: {exc}")
        else:
            st.session_state.setdefault(keys.TRAIN_LAUNCHED, []).append(job_id)
            st.toast(f"Started {name} ({job_id})")
    st.session_state[keys.TRAIN_ERRORS] = errors


# ---- live view ---------------------------------------------------------------------------------
for message in st.session_state.pop(keys.TRAIN_ERRORS, []):
    st.error(message)
running_now = bool(jobs_view.active(jobs_view.snapshots()))


@st.fragment(run_every=1.5 if running_now else None)
def live_view() -> None:
    snaps = jobs_view.snapshots()
    if not snaps:
        return
    show_done = st.toggle("Show finished jobs", value=True, key=keys.TRAIN_SHOW_FINISHED)
    shown = [s for s in snaps if show_done or s.state in jobs_view.ACTIVE_STATES]
    for s in shown:
        with st.container(border=True):
            head = st.columns([3, 1])
            head[0].markdown(f"**{s.subject}** · `{s.job_id}` · {s.state} · run `{s.run_dir.name}`")
            if s.state in jobs_view.ACTIVE_STATES:
                if head[1].button("Stop", key=keys.TRAIN_STOP_PREFIX + s.job_id, icon=":material/stop:"):
                    try:
                        jobs_view.job_manager().stop(s.job_id)
                    except ValueError as exc:
                        st.error(str(exc))
            st.progress(min(max(float(s.progress or 0.0), 0.0), 1.0), text=jobs_view.progress_text(s))
            if s.state == "failed":
                st.error(f"Failed: {s.error or s.message}")
            elif s.state == "finished":
                st.success(s.message or "finished")
            elif jobs_view.live_message(s):
                st.caption(jobs_view.live_message(s))
    histories = {f"{s.subject} ({s.job_id})": s.history for s in shown if s.history}
    if histories:
        c = st.columns([3, 1])
        smoothing = c[0].slider("Smoothing", 0.0, 0.99, 0.6, 0.01, key=keys.TRAIN_SMOOTHING,
                                help="Exponential moving average of the training loss (validation is unsmoothed).")
        log_y = c[1].toggle("Log scale", value=False, key=keys.TRAIN_LOG_Y)
        st.plotly_chart(plots.loss_curves(histories, smoothing=smoothing, log_y=log_y), key="train.loss_chart")
        st.plotly_chart(plots.lr_curves(histories), key="train.lr_chart")
    if running_now and not jobs_view.active(snaps):
        st.rerun()  # the last job just ended: refresh the whole page (and stop polling)
    st.page_link(nav.RUNS.path, label="All runs", icon=nav.RUNS.icon)


live_view()

# ---- launch form (collapsed once jobs exist) -------------------------------------------------
with st.expander("New training", expanded=not jobs_view.snapshots()):
    top = st.columns([2, 1])
    top[0].multiselect("Subjects", usable, default=usable[:1], key=keys.TRAIN_SUBJECTS,
                       help="One run per subject; runs of different subjects queue one after another.")
    top[1].selectbox("Preset", cfgmod.PRESETS, index=cfgmod.PRESETS.index("recommended"), key=keys.TRAIN_PRESET,
                     on_change=_apply_preset,
                     help="recommended: what worked best on the validation split of the simulated subjects. "
                          "reference: the original research code's settings (5000 epochs).")
    for k, v in train_form.widget_values(cfgmod.preset(st.session_state[keys.TRAIN_PRESET])).items():
        st.session_state.setdefault(k, v)

    with st.form(keys.TRAIN_FORM, border=False):
        cols = st.columns(len(train_form.SECTIONS))
        for col, (section, fields) in zip(cols, train_form.SECTIONS.items()):
            col.markdown(f"**{section}**")
            for f in fields:
                if f.kind == "select":
                    col.selectbox(f.label, f.options, key=f.widget_key, help=f.help)
                elif f.kind == "bool":
                    col.checkbox(f.label, key=f.widget_key, help=f.help)
                elif f.kind == "int":
                    col.number_input(f.label, min_value=None if f.min_value is None else int(f.min_value),
                                     max_value=None if f.max_value is None else int(f.max_value), step=1,
                                     key=f.widget_key, help=f.help)
                else:
                    col.number_input(f.label, min_value=f.min_value, max_value=f.max_value,
                                     format="%.2e" if f.kind == "sci" else "%.3f",
                                     step=None if f.kind == "sci" else 0.05, key=f.widget_key, help=f.help)
        st.form_submit_button("Start training", type="primary", key=keys.TRAIN_SUBMIT, on_click=_launch)

