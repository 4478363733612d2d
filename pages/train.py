"""Train: pick subjects, set hyperparameters, launch background jobs, watch them live."""

import streamlit as st

from neuroalign import config as cfgmod
from neuroalign import paths, plots
from neuroalign.text import markdown_code, markdown_literal as md
from neuroalign.ui import guards, jobs_view, keys, loaders, nav, resume, shared_view, train_form
from neuroalign.ui.entry import page_entry

page_entry()
st.title("Train")
subjects = guards.require_subjects()
usable = [s.name for s in subjects if not getattr(s, "error", None)]


def _apply_preset() -> None:
    """Reset every form field to the chosen preset's values."""
    st.session_state.update(train_form.widget_values(cfgmod.preset(st.session_state[keys.TRAIN_PRESET])))


def _newest_run_subject() -> str | None:
    """The subject of the most recent run (the one trained last), if any."""
    try:
        runs = loaders.list_runs()
    except (ValueError, OSError):
        return None
    return getattr(runs[0], "subject", None) if runs else None


def _stop(job_id: str) -> None:
    """Stop-button callback (runs before the rerun, so the card says 'stopping' at once)."""
    try:
        jobs_view.request_stop(job_id)
    except ValueError as exc:
        st.session_state[keys.TRAIN_ERRORS] = [f"Cannot stop {job_id}: {exc}"]


def _launch() -> None:
    """Form callback (runs before the page): start one job per chosen subject, keep errors to show."""
    errors: list[str] = []
    chosen = st.session_state.get(keys.TRAIN_SUBJECTS) or []
    try:
        if not chosen:
            raise ValueError("no subject selected; pick at least one subject to train")
        config = train_form.config_from_values(st.session_state[keys.TRAIN_PRESET], dict(st.session_state))
        from neuroalign.training.device import resolve_device  # torch: loaded when a job is started, not per page view

        resolve_device(config.device)
    except ValueError as exc:
        st.session_state[keys.TRAIN_ERRORS] = [f"Cannot start: {exc}"]
        return
    manager = jobs_view.job_manager()
    if st.session_state.get(keys.TRAIN_KIND) == shared_view.SHARED:  # one job for all the chosen subjects
        try:
            job_id = manager.start_shared(list(chosen), config, paths.data_dir(), paths.runs_dir())
        except (ValueError, FileNotFoundError) as exc:
            st.session_state[keys.TRAIN_ERRORS] = [f"Cannot start the shared model: {exc}"]
            return
        st.session_state[keys.TRAIN_FORM_OPEN] = False
        st.session_state.setdefault(keys.TRAIN_LAUNCHED, []).append(job_id)
        st.toast(f"Started a shared model over {md(', '.join(chosen))} ({job_id})")
        return
    st.session_state[keys.TRAIN_FORM_OPEN] = False
    for name in chosen:
        try:
            job_id = manager.start(name, config, paths.data_dir(), paths.runs_dir())
        except (ValueError, FileNotFoundError) as exc:
            errors.append(f"{name}: {exc}")
        else:
            st.session_state.setdefault(keys.TRAIN_LAUNCHED, []).append(job_id)
            st.toast(f"Started {md(name)} ({job_id})")
    st.session_state[keys.TRAIN_ERRORS] = errors


def _launch_adapt() -> None:
    """Adapt button callback: one job fitting the new subject's read-in on the chosen shared run."""
    run_dir, name = st.session_state.get(keys.TRAIN_ADAPT_RUN), st.session_state.get(keys.TRAIN_ADAPT_SUBJECT)
    try:
        if not run_dir or not name:
            raise ValueError("pick a finished shared run and a new subject")
        job_id = jobs_view.job_manager().start_adapt(run_dir, name, paths.data_dir(), paths.runs_dir())
    except (ValueError, FileNotFoundError) as exc:
        st.session_state[keys.TRAIN_ERRORS] = [f"Cannot adapt: {exc}"]
        return
    st.session_state[keys.TRAIN_FORM_OPEN] = False
    st.session_state.setdefault(keys.TRAIN_LAUNCHED, []).append(job_id)
    st.toast(f"Started adapting {md(name)} ({job_id})")


def _adapt_controls() -> None:
    """The shared run to adapt from and the new subject (its read-in is all that is fitted)."""
    runs = shared_view.shared_runs()
    if not runs:
        st.info("No finished shared run yet: train one shared model over several subjects first.",
                icon=":material/info:")
        return
    by_path = {str(r.path): r for r in runs}
    if st.session_state.get(keys.TRAIN_ADAPT_RUN) not in by_path:
        st.session_state[keys.TRAIN_ADAPT_RUN] = next(iter(by_path))
    c = st.columns([3, 2])
    run_dir = c[0].selectbox("Shared run", list(by_path), key=keys.TRAIN_ADAPT_RUN,
                             format_func=lambda p: shared_view.shared_run_label(by_path[p]),
                             help="A finished shared model; its image side and read-ins stay fixed.")
    taken = loaders.shared_subject_names(loaders.run_summary(run_dir).config)
    new = [n for n in usable if n not in taken]
    if not new:
        c[1].selectbox("New subject", [], key=keys.TRAIN_ADAPT_SUBJECT, disabled=True)
        st.info("Every subject of the data folder is already part of this shared run; import a new one first.")
        return
    if st.session_state.get(keys.TRAIN_ADAPT_SUBJECT) not in new:
        st.session_state[keys.TRAIN_ADAPT_SUBJECT] = new[0]
    name = c[1].selectbox("New subject", new, key=keys.TRAIN_ADAPT_SUBJECT,
                          help="Only this subject's read-in into the shared space is fitted (closed form); it need "
                               "not have seen the shared run's images, but its images must have the same size.")
    st.button(f"Adapt {md(name)} to this shared run", type="primary", key=keys.TRAIN_ADAPT_SUBMIT, on_click=_launch_adapt,
              icon=":material/call_merge:")


# ---- launch form (first, so it is reachable without scrolling; collapsed once jobs exist) -------
launch_errors = st.session_state.pop(keys.TRAIN_ERRORS, [])
for message in launch_errors:  # they carry subject names and error texts: shown as text
    st.error(md(message))
resume.show_errors()
if launch_errors:  # a failed start keeps the form (and the field to fix) open until a start succeeds
    st.session_state[keys.TRAIN_FORM_OPEN] = True
with st.expander("New training", expanded=not jobs_view.snapshots() or st.session_state.get(keys.TRAIN_FORM_OPEN, False),
                 icon=":material/add_circle:"):
    kind = st.radio("What to train", list(shared_view.TRAIN_KINDS), format_func=shared_view.TRAIN_KINDS.get,
                    horizontal=True, key=keys.TRAIN_KIND, help=shared_view.TRAIN_KIND_HELP)
    if kind == shared_view.ADAPT:
        _adapt_controls()
    else:
        top = st.columns([2, 1])
        if keys.TRAIN_SUBJECTS not in st.session_state:
            st.session_state[keys.TRAIN_SUBJECTS] = train_form.default_subjects(
                usable, st.session_state.get(keys.SELECTED_SUBJECT), subjects, _newest_run_subject())
        # Enter picks the first match only (no "Select N matches" row) and a typed name matches names that
        # contain it ("mouse7" does not pick "mouse8_v73" as a fuzzy subsequence would).
        top[0].multiselect("Subjects", usable, key=keys.TRAIN_SUBJECTS, select_all=False, filter_mode="contains",
                           help="One shared model over all of them (at least 2, images of one size)."
                           if kind == shared_view.SHARED else
                           "One run per subject; runs of different subjects queue one after another. "
                           "Defaults to the subject you used last (or a demo subject on a fresh install).")
        top[1].selectbox("Preset", cfgmod.PRESETS, index=cfgmod.PRESETS.index("recommended"), key=keys.TRAIN_PRESET,
                         on_change=_apply_preset,
                         help="recommended: what worked best on the validation split of the simulated subjects. "
                              "reference: the original research code's settings (5000 epochs). attention: "
                              "attention over the neurons (the transformer neural tower). Picking one resets every field.")
        shared = kind == shared_view.SHARED
        neural_kind, head = train_form.draw_selectors(  # a shared model has one image side and nothing else
            st.session_state[keys.TRAIN_PRESET], (train_form.BACKBONE_PATH,) if shared else train_form.SELECTOR_PATHS)
        with st.form(keys.TRAIN_FORM, border=False):
            if shared:  # closed form: only the image side, the shared space's size and the normaliser apply
                train_form.draw_shared_fields()
                st.caption(shared_view.SHARED_FORM_CAPTION)
            else:
                train_form.draw_sections(neural_kind, head)
            chosen_now = st.session_state.get(keys.TRAIN_SUBJECTS) or []
            st.form_submit_button(shared_view.start_label(kind, chosen_now) or train_form.start_label(chosen_now),
                                  type="primary", key=keys.TRAIN_SUBMIT, on_click=_launch)

# ---- live view ---------------------------------------------------------------------------------
running_now = bool(jobs_view.active(jobs_view.snapshots()))


@st.fragment(run_every=1.5 if running_now else None)
def live_view() -> None:
    snaps = jobs_view.snapshots()
    if not snaps:
        return
    show_done = st.toggle("Show finished jobs", value=True, key=keys.TRAIN_SHOW_FINISHED)
    shown, left_out = jobs_view.cards(snaps, show_ended=show_done)
    for s in shown:
        with st.container(border=True):
            head = st.columns([3, 1])
            head[0].markdown(f"{shared_view.job_title(s)} · `{s.job_id}` · {md(s.state)} · run "
                             f"{markdown_code(s.run_dir.name)}")
            if (s.state in jobs_view.ACTIVE_STATES and not jobs_view.is_stopping(s)
                    and not jobs_view.is_evaluating(s)):
                head[1].button("Stop", key=keys.TRAIN_STOP_PREFIX + s.job_id, icon=":material/stop:",
                               on_click=_stop, args=(s.job_id,),
                               help=("Stop at the next phase (a closed-form fit: nothing to resume)."
                                     if getattr(s, "mode", "train") != "train" else
                                     "Stop after the current step; the best checkpoint is restored and evaluated.")
                               if s.state == "running" else "Take this job out of the queue.")
            else:
                resume.button(s.run_dir, s.state, keys.TRAIN_RESUME_PREFIX + s.job_id, where=head[1],
                              hide_blocked=True)
            st.progress(min(max(float(s.progress or 0.0), 0.0), 1.0), text=jobs_view.progress_text(s, snaps))
            if s.state == "failed":
                st.error(f"Failed: {md(s.error or s.message)}")
            elif s.state == "finished":
                st.success(md(s.message or "finished"))
            elif jobs_view.is_stopping(s):
                st.warning(md(jobs_view.live_message(s)), icon=":material/hourglass_top:")
            elif jobs_view.live_message(s):
                st.caption(md(jobs_view.live_message(s)))
    if left_out:
        st.caption(f"{left_out} older finished job{'s' if left_out > 1 else ''} not shown here; the Runs page "
                   "lists every run.")
    with_history = [s for s in shown if s.history]
    if with_history:
        live = [s for s in with_history if s.state in jobs_view.ACTIVE_STATES]
        others = {jobs_view.job_label(s): s for s in with_history if s not in live}
        watched = st.session_state.setdefault(keys.TRAIN_WATCHED, [])  # jobs this session saw live
        watched.extend(label for label in map(jobs_view.job_label, live) if label not in watched)
        del watched[:-20]
        c = st.columns([3, 2, 1])
        if st.session_state.get(keys.TRAIN_COMPARE_AUTO, True):
            # until the user picks: the job this session was watching when it ended (a Stop must not swap
            # the chart to the next queued job's curves), else, with nothing live, the newest finished one
            followed = [label for label in others if label in watched][:1]
            st.session_state[keys.TRAIN_COMPARE] = followed or ([] if live else list(others)[:1])
        else:
            st.session_state[keys.TRAIN_COMPARE] = [x for x in st.session_state.get(keys.TRAIN_COMPARE, [])
                                                    if x in others]
        compare = c[0].multiselect("Also show", list(others), key=keys.TRAIN_COMPARE,
                                   on_change=lambda: st.session_state.update({keys.TRAIN_COMPARE_AUTO: False}),
                                   help="Finished jobs to overlay. Running jobs are always drawn, on top, with "
                                        "thick lines; without one, the newest finished job is shown.")
        smoothing = c[1].slider("Smoothing", 0.0, 0.99, 0.6, 0.01, key=keys.TRAIN_SMOOTHING,
                                help="Exponential moving average of the training loss (validation is unsmoothed).")
        log_y = c[2].toggle("Log", value=False, key=keys.TRAIN_LOG_Y, help="Logarithmic loss axes")  # fits 1,024 px
        histories = {label: others[label].history for label in compare if label in others}
        histories.update({jobs_view.job_label(s): s.history for s in live})
        live_labels = [jobs_view.job_label(s) for s in live]
        if histories:
            st.plotly_chart(plots.loss_curves(histories, smoothing=smoothing, log_y=log_y, live=live_labels),
                            key="train.loss_chart")
            st.plotly_chart(plots.lr_curves(histories, live=live_labels), key="train.lr_chart")
    if running_now and not jobs_view.active(snaps):
        st.rerun()  # the last job just ended: refresh the whole page (and stop polling)
    st.page_link(nav.RUNS.path, label="All runs", icon=nav.RUNS.icon)


live_view()
