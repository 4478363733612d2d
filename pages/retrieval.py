"""Retrieval: how well a finished run identifies images from neural responses and vice versa."""

import numpy as np
import streamlit as st

from neuroalign import plots
from neuroalign.training.runs import RESULTS_FILE
from neuroalign.ui import guards, keys, nav, neurons_view, profile_view, results_view, run_picker, shared_view
from neuroalign.ui.entry import page_entry

# Table headers short enough for a 1,024 px window (the help of each column names the baseline in full)
SHORT_LABELS = {"ridge pixels": "pixels", "ridge random": "random", "ridge backbone": "backbone"}

page_entry()
st.title("Retrieval")
run, summary, outputs = run_picker.pick_finished_run(keys.RETRIEVAL_RUN)
problems = summary.problems
guards.show_summary_problems(run.run_id, summary)
results = summary.results or {}
sim = np.asarray(outputs["similarity"])
test_idx = np.asarray(outputs["test_indices"])
n = len(test_idx)

# ---- metrics -----------------------------------------------------------------------------------
st.subheader(f"Test identification among {n} held-out images")
if RESULTS_FILE in problems:
    st.info("The metrics of this run cannot be shown until its results.json is rewritten (see the error above); "
            "the query browser and the test pairs below come from its test outputs.")
else:
    left, right = st.columns(2)
    with left:
        warning = results_view.small_test_warning(results)
        if warning:
            st.warning(warning, icon=":material/warning:")
        for verdict in results_view.linear_verdicts(results):
            box = {True: st.success, False: st.error, None: st.info}[verdict.beats]
            box(verdict.text)
        encoding = results_view.encoding_summary(results)
        if encoding is not None:  # the encoding score beside retrieval (runs without repeats have none)
            cols = st.columns(2)
            for col, key, label in ((cols[0], "model", "FEVE, model"), (cols[1], "ridge_backbone", "FEVE, ridge")):
                if key in encoding:  # short labels: two metrics side by side fit a 1,024 px window
                    value = encoding[key].median
                    col.metric(label, "—" if value is None else f"{value:.2f}", help=(
                        "median over neurons. " + results_view.FEVE_HELP if key == "model" else
                        "median over neurons: the same score of a ridge from the run's frozen image features"))
                    col.caption(encoding[key].detail() or "no neuron has enough explainable variance")
    right.plotly_chart(plots.top1_bars(results_view.top1_bar_rows(results), results_view.chance_top1(results)),
                       key="retrieval.bars")
    table_direction = st.radio("Metrics of", list(results_view.DIRECTIONS), format_func=results_view.DIRECTIONS.get,
                               horizontal=True, key="retrieval.table_direction")
    helps = results_view.column_help(results)
    st.dataframe(results_view.metrics_table(results, table_direction), hide_index=True, key="retrieval.metrics",
                 column_config={c: st.column_config.NumberColumn(SHORT_LABELS.get(c, c), format="%.3f", help=h)
                                for c, h in helps.items()})
    st.caption("top-k: share of queries whose true match is among the k best · rank 1 = best · mrr: mean reciprocal "
               "rank · 95% lo/hi: the 95 % interval of top-1 over the test images · chance: a random ranking · hover "
               "a column name for what each baseline is. pixels, random, backbone: ridge regression from the pixels, "
               "from random features and from the backbone features; the best linear readout is the best of them.")

if summary.is_shared:  # a shared run: does one subject's response retrieve another's?
    shared_view.render_cross_subject(summary)

# ---- query browser -----------------------------------------------------------------------------
st.subheader("Query browser")
stimuli = run_picker.stimuli_for(summary, test_idx)
c = st.columns([2, 2, 1])
direction = c[0].radio("Direction", list(results_view.DIRECTIONS), format_func=results_view.DIRECTIONS.get,
                       horizontal=True, key=keys.RETRIEVAL_DIRECTION)
query = c[1].selectbox("Query (test image)", range(n), format_func=lambda i: f"test image {int(test_idx[i])}",
                       key=keys.RETRIEVAL_QUERY)
k = c[2].number_input("Top k", 1, min(20, n), min(5, n), key=keys.RETRIEVAL_K)
order, scores = plots.top_k(sim, query, k, direction)
ranks = plots.true_match_ranks(sim)
rank = float(ranks[direction][query])

qcol, rcol = st.columns([1, 4])
with qcol:
    what = "stimulus" if direction == "image_to_neural" else "neural response to"
    st.markdown(f"**Query:** {what} test image {int(test_idx[query])}")
    if stimuli is not None:
        st.image(plots.as_display_image(stimuli[query]), width="stretch")
    # text that wraps: a metric's "12 / 140" (or its label) was cut in this narrow column at 1,024 px
    st.markdown(f"**Match rank:** {rank:g} of {n}", help="rank of the true match among all test candidates "
                                                         "(1 = retrieved first)")
with rcol:
    kind = "neural responses (shown as their stimuli)" if direction == "image_to_neural" else "stimuli"
    kind_one = "neural response (shown as its stimulus)" if direction == "image_to_neural" else "stimulus"
    top = f"The best-ranked {kind_one}" if len(order) == 1 else f"Top {len(order)} retrieved {kind}"
    st.markdown(f"**{top}** — the correct match is framed in green")
    cols = st.columns(min(len(order), 5))
    for pos, (j, score) in enumerate(zip(order, scores)):
        correct = j == query
        caption = f"#{pos + 1} · test image {int(test_idx[j])} · sim {score:.3f}" + (" · CORRECT" if correct else "")
        with cols[pos % len(cols)]:
            if stimuli is not None:
                picture = plots.as_display_image(stimuli[j])
                st.image(plots.framed(picture) if correct else picture, caption=caption, width="stretch")
            else:
                st.markdown(caption)

# ---- whole test set ----------------------------------------------------------------------------
st.subheader("All test pairs")
# the matrix on its own row: in a column beside the histogram it was ~160 px wide at 1,024 px
shown = min(n, 300)
st.plotly_chart(plots.similarity_heatmap(sim[:shown, :shown], test_idx[:shown]), key="retrieval.heatmap")
st.caption("Rows: test images; columns: the neural responses to the same test images, in the same order "
           "(ticks: image ids). The true pairs are the diagonal (framed cells, or between the two dotted lines "
           "for a large test set; the marks never cover it): a bright diagonal means the model identifies "
           "images well." + (f" First {shown} of {n} test images." if shown < n else ""))
st.plotly_chart(plots.rank_histogram(ranks), key="retrieval.ranks")
st.caption("Where the true match lands in each query's ranking. A random ranking spreads the ranks evenly "
           "(dashed line); a good model piles them up at rank 1.")
st.page_link(neurons_view.PAGE.path, label="Which neurons drive this run's retrieval", icon=neurons_view.PAGE.icon)
subject_name = summary.subject_name
if subject_name:
    st.session_state[profile_view.PREFERRED_SUBJECT] = subject_name  # the Image models page opens on it
st.page_link(nav.PROFILE.path, label="Which image model and layer align with this subject (layer profile)",
             icon=nav.PROFILE.icon)
