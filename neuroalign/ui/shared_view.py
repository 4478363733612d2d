"""The pages' parts for shared runs (one model over several subjects, `training.shared_runs`): the
Train page's choice of what to train, the cross-subject retrieval table and chart (Retrieval), the
shared-space view that stands in for feature maps, and the per-subject table of the Runs page."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import streamlit as st

from neuroalign import plots
from neuroalign.text import markdown_code, markdown_literal as md
from neuroalign.ui import keys, loaders
from neuroalign.ui.result_files import CrossSubject, PairDirection
from neuroalign.ui.summary import RunSummary

# ---- Train page ----------------------------------------------------------------------------------

SEPARATE, SHARED, ADAPT = "separate", "shared", "adapt"
TRAIN_KINDS = {SEPARATE: "One run per subject", SHARED: "One shared model over the selected subjects",
               ADAPT: "Adapt a new subject from a shared run"}
TRAIN_KIND_HELP = (
    "One run per subject: an independent model for each. One shared model: one image side for all the selected "
    "subjects and one linear read-in per subject into a shared space, fitted in closed form (splits by image "
    "identity, shared across subjects); one run folder with every subject's results and cross-subject "
    "retrieval. Adapt: "
    "keep a finished shared model fixed and fit only a new subject's read-in (seconds on a CPU).")

SHARED_FORM_CAPTION = (
    "One image side for every selected subject (the frozen features of this image model and layer) and one "
    "linear read-in per subject into a shared space of this many components (up to; the rank is chosen on the "
    "validation images), fitted in closed form in a worker process. Images are split by their pixels, so an "
    "image is train, validation or test for every subject alike. The subjects need images of one size.")


def shared_runs() -> list[Any]:
    """Finished shared runs (RunInfo), newest first: what a new subject can be adapted from."""
    out = []
    for run in loaders.list_runs():
        if run.state != "finished":
            continue
        try:
            kind = loaders.run_summary(run.path).kind
        except (ValueError, FileNotFoundError, OSError):
            continue
        if kind == "shared":
            out.append(run)
    return out


def shared_run_label(run: Any) -> str:
    names = loaders.shared_subject_names(loaders.run_summary(run.path).config)
    return f"{', '.join(names)} · {run.run_id}"


def start_label(kind: str, chosen: list[str], shown: int = 3) -> str | None:
    """The launch button's label for a shared model (None: the per-subject label applies)."""
    if kind != SHARED:
        return None
    if not chosen:
        return "Start a shared model"
    names = ", ".join(chosen[:shown]) + (f" + {len(chosen) - shown} more" if len(chosen) > shown else "")
    return f"Start 1 shared model over {len(chosen)} subject{'s' if len(chosen) != 1 else ''}: {names}"


def job_title(snap: Any) -> str:
    """The job card's headline: subject(s) and, for a shared or adapt job, what it is."""
    mode = getattr(snap, "mode", "train")
    if mode == SHARED:
        return f"**{md(', '.join(snap.subjects) or snap.subject)}** · shared model"
    if mode == ADAPT:
        source = Path(str(snap.adapt_from)).name if getattr(snap, "adapt_from", None) else "a shared run"
        return f"**{md(snap.subject)}** · adapted from {markdown_code(source)}"
    return f"**{md(snap.subject)}**"


# ---- Runs page: one row per subject of a shared run ------------------------------------------------


def subjects_frame(run_dir: str | Path, names: list[str]) -> pd.DataFrame:
    """One row per subject of a shared run: its test top-1 both ways with 95 % intervals, chance, the
    best linear readout and the test size (from subjects/<name>/results.json)."""
    rows = []
    for name in names:
        results = loaders.shared_subject_summary(run_dir, name).run_results
        test = results.test
        row: dict[str, Any] = {"subject": name}
        for direction, short in (("image_to_neural", "img→neu"), ("neural_to_image", "neu→img")):
            ci = test.directions[direction].top1_ci if direction in test.directions else None
            lo, hi = ci or (None, None)
            row[f"top1 {short}"] = test.top1(direction)
            row[f"95% {short}"] = f"{lo:.2f}–{hi:.2f}" if lo is not None and hi is not None else ""
        row["linear img→neu"] = results.best_linear_top1("image_to_neural")
        row["linear neu→img"] = results.best_linear_top1("neural_to_image")
        row["chance"] = test.chance["chance_top1"]
        row["test n"] = None if test.n is None else int(test.n)
        rows.append(row)
    return pd.DataFrame(rows)


SUBJECT_COLUMNS = {
    "subject": st.column_config.TextColumn("subject", pinned=True),
    "top1 img→neu": st.column_config.ProgressColumn("top1 img→neu", min_value=0.0, max_value=1.0, format="%.3f",
                                                    width=92, help="test top-1 of this subject, image query → "
                                                                   "neural candidates"),
    "top1 neu→img": st.column_config.ProgressColumn("top1 neu→img", min_value=0.0, max_value=1.0, format="%.3f",
                                                    width=92),
    "95% img→neu": st.column_config.TextColumn("95 %", width=72, help="95 % interval of top-1 (image → neural) "
                                                                     "over the test images"),
    "95% neu→img": st.column_config.TextColumn("95 % ", width=72, help="the same, neural → image"),
    "linear img→neu": st.column_config.NumberColumn("linear img→neu", format="%.3f", width=100,
                                                    help="the best ridge baseline's test top-1 on the same images"),
    "linear neu→img": st.column_config.NumberColumn("linear neu→img", format="%.3f", width=100),
    "chance": st.column_config.NumberColumn("chance", format="%.3f", width=60, help="top-1 of a random ranking"),
    "test n": st.column_config.NumberColumn("test n", format="%d", width=50, help="test images of this subject"),
}


# ---- Retrieval page: cross-subject retrieval -----------------------------------------------------

TRIAL_KIND = "across subjects"
SINGLE_KIND = "across subjects, single trials"
REPEAT_KIND = "same subject, repeat 1 → repeat 2"
CROSS_HELP = ("A subject's response to a test image, embedded by its read-in, is the query; the candidates are the "
              "other subject's responses to the same test images, embedded by its own read-in (cosine in the shared "
              "space). Only test images both saw count. Mean responses, and single trials (repeat 1 of each) where "
              "both have repeats. For scale: the same subject's repeat 1 retrieving its repeat 2 over its test "
              "images — what a second recording of the same mouse reaches.")


def _row(label: str, kind: str, m: PairDirection, n: int | None, chance: float | None) -> dict[str, Any]:
    lo, hi = m.top1_ci
    return {"label": label, "kind": kind, "top1": m.top1, "lo": lo, "hi": hi, "chance": chance, "n": n,
            "top5": m.top5, "mrr": m.mrr}


def cross_subject_rows(cross: CrossSubject | Mapping[str, Any] | None, subject: str | None = None
                       ) -> list[dict[str, Any]]:
    """Rows for the table and chart: both directions of every pair (those with `subject` when
    given), single trials where present, then the repeat scale of the subjects involved."""
    cross = CrossSubject.from_json(cross)
    rows, involved = [], []
    for p in cross.pairs:
        a, b = p.a, p.b
        if subject is not None and subject not in (a, b):
            continue
        involved += [x for x in (a, b) if x not in involved]
        for src, kind, suffix in ((p.mean, TRIAL_KIND, ""), (p.single_trial, SINGLE_KIND, " (1 trial)")):
            if src is None:
                continue
            for way, (q, c) in ((src.a_to_b, (a, b)), (src.b_to_a, (b, a))):
                if way is not None:
                    rows.append(_row(f"{q} → {c}{suffix}", kind, way, src.n, src.chance_top1))
    for name in involved or list(cross.repeat_scale):
        s = cross.repeat_scale.get(name)
        if s is not None and s.a_to_b is not None:
            rows.append(_row(f"{name}: repeat 1 → repeat 2", REPEAT_KIND, s.a_to_b, s.n, s.chance_top1))
    return rows


RESPONSES = {TRIAL_KIND: "mean over repeats", SINGLE_KIND: "single trials", REPEAT_KIND: "same subject's repeats"}


def cross_subject_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The table: query → candidates (the label without its kind suffix), which responses, top-1 with
    its interval, chance, shared images, top-5 and MRR."""
    return pd.DataFrame([{"query → candidates": r["label"].replace(" (1 trial)", ""),
                          "responses": RESPONSES.get(r["kind"], r["kind"]), "top-1": r["top1"], "95% lo": r["lo"],
                          "95% hi": r["hi"], "chance": r["chance"], "images": r["n"], "top-5": r["top5"],
                          "mrr": r["mrr"]} for r in rows],
                        columns=["query → candidates", "responses", "top-1", "95% lo", "95% hi", "chance", "images",
                                 "top-5", "mrr"])


CROSS_COLUMNS = {
    "query → candidates": st.column_config.TextColumn("query → candidates", pinned=True, width=165),
    "responses": st.column_config.TextColumn("responses", help="mean over repeats: each subject's trial-averaged "
                                             "response; single trials: repeat 1 of each; same subject's repeats: "
                                             "repeat 1 retrieving repeat 2 of one subject (the scale)"),
    "top-1": st.column_config.NumberColumn("top-1", format="%.3f", help="share of queries whose own image's response "
                                                                        "of the other subject is retrieved first"),
    "95% lo": st.column_config.NumberColumn("95% lo", format="%.3f", help="95 % interval of top-1 over the images"),
    "95% hi": st.column_config.NumberColumn("95% hi", format="%.3f"),
    "chance": st.column_config.NumberColumn("chance", format="%.3f", help="top-1 of a random ranking (1 / images)"),
    "images": st.column_config.NumberColumn("images", format="%d", help="shared test images (candidates per query)"),
    "top-5": st.column_config.NumberColumn("top-5", format="%.3f"),
    "mrr": st.column_config.NumberColumn("mrr", format="%.3f", help="mean reciprocal rank of the true match"),
}


def render_cross_subject(summary: RunSummary) -> None:
    """The Retrieval page's cross-subject section of a shared run (or one line saying why there is none)."""
    subject = summary.shared_subject
    cross = summary.shared_results.cross_subject
    st.subheader("Across subjects: one mouse's response retrieves another's")
    st.caption(CROSS_HELP)
    rows = cross_subject_rows(cross, subject)
    skipped = [s for s in cross.skipped if subject in (s.a, s.b)]
    if not any(r["kind"] != REPEAT_KIND for r in rows):
        why = "; ".join(f"{md(s.a)} and {md(s.b)}: {md(s.reason)}" for s in skipped[:4])
        st.info(f"No cross-subject retrieval for {md(subject)}: it shares no test images with another subject of "
                f"this run{f' ({why})' if why else ''}.", icon=":material/info:")
        return
    # one above the other: side by side, both were cut at 1,024 px
    st.dataframe(cross_subject_frame(rows), hide_index=True, column_config=CROSS_COLUMNS, key="retrieval.cross",
                 height=35 * (len(rows) + 1) + 3)
    st.plotly_chart(plots.cross_subject_bars(rows), key="retrieval.cross_chart")
    for s in skipped:
        st.caption(f"Not compared: {md(s.a)} and {md(s.b)} — {md(s.reason)}.")


# ---- Feature maps page: the shared space instead of maps --------------------------------------------


def render_embeddings(summary: Mapping[str, Any], outputs: Mapping[str, np.ndarray], stimuli_for) -> None:
    """A shared run has no spatial maps: its image side and each read-in map into one shared vector
    space. Shown instead: a test image's two embeddings, dimension by dimension, their cosine
    (what retrieval ranks), its place among the test images, and every test image's two embeddings."""
    from neuroalign.evaluation.shared_eval import cosine_matrix

    z = np.asarray(outputs["image_embedding"], dtype=np.float64)
    e = np.asarray(outputs["neural_embedding"], dtype=np.float64)
    test_idx = np.asarray(outputs["test_indices"])
    n, q = z.shape
    cos = np.diag(cosine_matrix(z, e))
    st.info("A shared model has no feature maps: its image side and each subject's read-in map into one "
            f"{q}-dimensional shared space. Shown instead: the two embeddings of each test image and their cosine "
            "similarity, which is what retrieval ranks.", icon=":material/info:")
    order = np.argsort(-cos, kind="stable")
    key = keys.MAPS_SAMPLE + ".shared"
    if not 0 <= st.session_state.get(key, 0) < n:
        st.session_state[key] = 0

    def set_sample(position: int) -> None:
        st.session_state[key] = int(position) % n

    with st.container(horizontal=True, vertical_alignment="bottom"):
        st.selectbox("Sample", range(n), key=key, width=220, format_func=lambda j: f"test image {int(test_idx[j])}",
                     help="Images of this subject's held-out test split, by image id (0-based index in the subject).")
        i = int(st.session_state.get(key, 0))
        st.button("Best", icon=":material/star:", key=key + ".best", on_click=set_sample, args=(int(order[0]),),
                  help="highest cosine")
        st.button("Worst", icon=":material/trending_down:", key=key + ".worst", on_click=set_sample,
                  args=(int(order[-1]),), help="lowest cosine")
        st.button("Prev", icon=":material/chevron_left:", key=key + ".prev", on_click=set_sample, args=(i - 1,))
        st.button("Next", icon=":material/chevron_right:", key=key + ".next", on_click=set_sample, args=(i + 1,))
    stimuli = stimuli_for(summary, test_idx[i:i + 1])
    left, right = st.columns([1, 3])
    with left:
        if stimuli is not None:
            st.image(plots.as_display_image(stimuli[0]), caption=f"test image {int(test_idx[i])}", width="stretch")
        st.metric("Cosine of this sample", f"{cos[i]:.3f}")
        st.caption(f"Rank {int((cos > cos[i]).sum()) + 1} of {n} test images by cosine · mean {np.mean(cos):.3f}")
    right.plotly_chart(plots.embedding_lines(z[i], e[i], title=f"test image {int(test_idx[i])} · cosine {cos[i]:.3f}"),
                       key="maps.shared_lines")
    st.plotly_chart(plots.histogram(cos, "Cosine per test image", "cosine of its two embeddings", vline=float(cos[i]),
                                    vline_label="this sample"), key="maps.shared_hist")
    # on a row of its own: beside the histogram its two panels' titles ran into each other at 1,024 px
    st.plotly_chart(plots.embedding_heatmaps(z, e, test_idx), key="maps.shared_heat")
    st.caption("Each row scaled to unit length; a row that looks alike on both sides is a well-aligned test image.")
