"""Feature maps: the image-tower and neural-tower maps of test samples side by side."""

import numpy as np
import streamlit as st

from neuroalign import plots
from neuroalign.ui import guards, keys, run_picker, shared_view
from neuroalign.ui.entry import page_entry

page_entry()
st.title("Feature maps")
run, summary, outputs = run_picker.pick_finished_run(keys.MAPS_RUN)
guards.show_summary_problems(run.run_id, summary)
if summary.is_shared:  # a shared run: one vector space, no maps; its embeddings instead
    shared_view.render_embeddings(summary, outputs, run_picker.stimuli_for)
    st.stop()
image_maps = np.asarray(outputs["image_maps"])
neural_maps = np.asarray(outputs["neural_maps"])
ssim = np.asarray(outputs["ssim"], dtype=np.float64)
test_idx = np.asarray(outputs["test_indices"])
n = len(test_idx)
order = np.argsort(-ssim, kind="stable")  # best first


def _set_sample(position: int) -> None:
    st.session_state[keys.MAPS_SAMPLE] = int(position) % n


if not 0 <= st.session_state.get(keys.MAPS_SAMPLE, 0) < n:
    _set_sample(0)
with st.container(horizontal=True, vertical_alignment="bottom"):
    st.selectbox("Sample", range(n), key=keys.MAPS_SAMPLE, width=220,
                 format_func=lambda j: f"test image {int(test_idx[j])}",
                 help="Images of the run's held-out test split, by image id (0-based index in the subject).")
    current = int(st.session_state.get(keys.MAPS_SAMPLE, 0))
    st.button("Best", icon=":material/star:", key=keys.MAPS_BEST, on_click=_set_sample, args=(int(order[0]),),
              help="highest SSIM")
    st.button("Worst", icon=":material/trending_down:", key=keys.MAPS_WORST, on_click=_set_sample,
              args=(int(order[-1]),), help="lowest SSIM")
    st.button("Random", icon=":material/casino:", key=keys.MAPS_RANDOM,
              on_click=lambda: _set_sample(np.random.default_rng().integers(n)))
    st.button("Prev", icon=":material/chevron_left:", key=keys.MAPS_PREV, on_click=_set_sample, args=(current - 1,))
    st.button("Next", icon=":material/chevron_right:", key=keys.MAPS_NEXT, on_click=_set_sample, args=(current + 1,))
    centre = st.toggle("Subtract the mean map", value=True, key=keys.MAPS_CENTRE,
                       help="Show each map minus its tower's mean map over the test set, so structure that every "
                            "stimulus shares (e.g. a bright border frame of the image tower) does not hide what is "
                            "specific to this stimulus. SSIM is always computed on the maps as they are.")
    overlay = st.toggle("Overlay on stimulus", key=keys.MAPS_OVERLAY)

i = current
stimuli = run_picker.stimuli_for(summary, test_idx[i:i + 1])
stimulus = stimuli[0] if stimuli is not None else np.zeros(image_maps.shape[-2:])
shown_image, shown_neural = image_maps[i], neural_maps[i]
if centre:
    shown_image = shown_image - image_maps.mean(axis=0)
    shown_neural = shown_neural - neural_maps.mean(axis=0)
better = int((ssim > ssim[i]).sum())
st.plotly_chart(plots.feature_map_panel(stimulus, shown_image, shown_neural, overlay=overlay,
                                        title=f"test image {int(test_idx[i])} · SSIM {ssim[i]:.3f}"),
                key="maps.panel")
st.caption(f"Test image {int(test_idx[i])} (image id in the subject) from the run's held-out test split: SSIM rank "
           f"{better + 1} of {n} test images." + (" Both maps minus their tower's mean map over the test set."
                                                  if centre else ""))
m = st.columns(3)
m[0].metric("SSIM of this sample", f"{ssim[i]:.3f}")
m[1].metric("Mean SSIM (test)", f"{np.nanmean(ssim):.3f}")
m[2].metric("Median SSIM (test)", f"{np.nanmedian(ssim):.3f}")

left, right = st.columns(2)
left.plotly_chart(plots.histogram(ssim, "Per-sample SSIM over the test set", "SSIM", vline=float(ssim[i]),
                                  vline_label="this sample"), key="maps.ssim_hist")
with right:
    st.plotly_chart(plots.mean_maps(image_maps, neural_maps), key="maps.mean")
    st.caption("Mean maps over all test samples: structure shared by every stimulus (e.g. a receptive-field "
               "patch) shows up here rather than in single samples.")
