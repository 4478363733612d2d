"""Neurons: which neurons drive a finished run's alignment, against their reliability and ground truth."""

import numpy as np
import streamlit as st

from neuroalign.text import markdown_literal as md
from neuroalign.ui import guards, loaders, neurons_view, run_picker
from neuroalign.ui.entry import page_entry

page_entry()
st.title("Neurons")
st.caption("Which neurons the trained model relies on to identify images, and whether those are the reliable ones.")
with st.expander("How importance is computed"):
    st.markdown(neurons_view.IMPORTANCE_HELP)
run, summary, outputs = run_picker.pick_finished_run(neurons_view.RUN_KEY)
guards.show_summary_problems(run.run_id, summary)
name = summary.subject_name
try:
    if not name:
        raise ValueError("the run's config.json does not record its subject")
    with st.spinner("Computing per-neuron importance on the test images…"):
        result = (loaders.shared_importance(run.path, name) if summary.is_shared  # a shared run's subject
                  else loaders.run_importance(run.path, name))
    subject = loaders.load_subject(name)
except (ValueError, FileNotFoundError, OSError) as exc:
    st.error(f"Cannot compute neuron importance for run {md(run.run_id)}: {md(exc)}")
    st.stop()

if summary.is_shared:
    st.caption(f"In this shared run: the importance of each neuron of {md(name)} for its linear read-in into the "
               "shared space (the image side's test embeddings take the place of the image maps; softmax "
               f"temperature {result['temperature']:g}, the run config's).")
share = np.asarray(result["share"])
k = len(share)
reliability = loaders.subject_stats(name)["reliability"]
snr = loaders.true_snr(name)
if snr is not None and len(snr) != k:
    snr = None
neurons_view.render_metrics(result)
for warning in result["warnings"] + neurons_view.small_sample_warnings(result):
    st.warning(warning, icon=":material/warning:")

key = st.radio("Measure", list(neurons_view.MEASURE_OPTIONS), format_func=neurons_view.MEASURE_OPTIONS.get,
               horizontal=True, key=neurons_view.MEASURE_KEY,
               help="Importance: how strongly each neuron moves the retrieval, either way. Net contribution: how much "
                    "it helps on average (a neuron that as often misleads as it helps nets out near 0).")
measure = neurons_view.MEASURES[key]
values = neurons_view.measure_values(result, key)
neurons_view.render_comparisons(values, reliability, snr, has_repeats=subject.repeats is not None,
                                simulated=bool(subject.meta.get("simulated")), measure=measure.noun)

charts = neurons_view.charts(values, measure, reliability, snr, result)
feve = neurons_view.feve_values(summary.results or {}, k)  # None: an older run or no repeats
if feve is not None:
    fev = neurons_view.fev_values(subject.repeats, summary.test_indices)
    charts.append(neurons_view.feve_chart(feve, fev, summary.results or {}))
for row in range(0, len(charts), 2):
    for col, (fig, chart_key, caption) in zip(st.columns(2), charts[row:row + 2]):
        col.plotly_chart(fig, key=chart_key)
        col.caption(caption)

st.subheader(f"The {neurons_view.TOP_ROWS} neurons with the largest {measure.noun}")
table = neurons_view.neuron_table(share, neurons_view.measure_values(result, "net"), result["native"], reliability,
                                  snr, by=key, feve=feve)
top = table.head(neurons_view.TOP_ROWS)
st.dataframe(top, hide_index=True, column_config=neurons_view.table_columns(top["share"].max()),
             height=35 * (len(top) + 1) + 3, key=neurons_view.TABLE_KEY)
csv = table.rename(columns={"share": "importance_percent", "net": "net_percent"}).to_csv(index=False)
st.download_button("All neurons (CSV)", data=csv, file_name=f"{run.run_id}_neurons.csv", mime="text/csv",
                   on_click="ignore", icon=":material/download:", key="neurons.download")
