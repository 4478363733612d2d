"""Image models: which image model, and which layer of it, aligns with a subject's population (the
layer-by-layer alignment profile, run as a background job and kept with the subject)."""

import streamlit as st

from neuroalign import paths
from neuroalign.text import markdown_literal as md
from neuroalign.training.profile import load_profile
from neuroalign.ui import guards, keys, loaders, profile_view
from neuroalign.ui.entry import page_entry

page_entry()
st.title("Image models")
st.caption("Which image model, and which layer of it, aligns with a subject's population — layer by layer, against "
           "the pixel and random-feature baselines and the noise ceiling (Yamins et al. 2014, Cadena et al. 2019).")
subjects = [s for s in guards.require_subjects() if not s.error]
names = [s.name for s in subjects]
if not names:
    st.info("No readable subject: the Subjects page says what is wrong with the folders found.")
    st.stop()
preferred = st.session_state.pop(profile_view.PREFERRED_SUBJECT, None)  # the run last seen on Retrieval
if preferred in names:
    st.session_state[profile_view.SUBJECT_KEY] = preferred
elif st.session_state.get(profile_view.SUBJECT_KEY) not in names:
    selected = st.session_state.get(keys.SELECTED_SUBJECT)
    st.session_state[profile_view.SUBJECT_KEY] = selected if selected in names else names[0]
name = st.selectbox("Subject", names, key=profile_view.SUBJECT_KEY)
store = loaders.subject_store()
subject_dir = store.path(name)

status = profile_view.render_job(name, subject_dir)
try:
    data_hash = loaders.load_subject(name).data_hash
except (ValueError, OSError) as exc:
    st.error(f"Cannot load subject {md(name)}: {md(exc)}")
    st.stop()
profile = load_profile(subject_dir, data_hash)
stale = profile is None and load_profile(subject_dir) is not None
with st.expander("Run a profile", expanded=profile is None and not (status and status.active),
                 icon=":material/tune:"):
    profile_view.render_form(name, paths.data_dir(), running=bool(status and status.active))
if profile is None:
    st.info(f"{'The stored profile of ' + md(name) + ' was computed on other data' if stale else 'No profile of ' + md(name) + ' yet'}: "
            "run one above. On two CPU cores a demo subject takes a few minutes per model.",
            icon=":material/info:")
    st.stop()
profile_view.render_profile(profile)
