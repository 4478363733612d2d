"""The Image models page's parts: the layer-by-layer alignment profile of a subject
(`neuroalign.training.profile`), run as a background job in a worker process
(`neuroalign.jobs.profile_job`) and kept with the subject (`<subject>/profile.json`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping

import pandas as pd
import streamlit as st

from neuroalign.text import markdown_literal as md
from neuroalign.training.profile_file import LayerFeve, Profile, ProfileRow

SUBJECT_KEY = "profile.subject"
PREFERRED_SUBJECT = "profile.preferred_subject"  # set by Retrieval: the run's subject, preselected here
MODELS_KEY = "profile.models"
LAYERS_KEY = "profile.layers"
BUDGET_KEY = "profile.budget_min"
RUN_KEY = "profile.run"
STOP_KEY = "profile.stop"
SPLIT_KEY = "profile.split"
X_KEY = "profile.x"
TABLE_KEY = "profile.table"
ERRORS_KEY = "profile.errors"
SEEN_ACTIVE = "profile.seen_active"  # subject folders whose job this session saw running

LAYER_OPTIONS = {"stages": "End of every stage", "all": "Every block"}
SPLIT_OPTIONS = {"test": "Test", "val": "Validation"}
X_OPTIONS = {"block": "Block", "relative": "Relative depth"}
DEFAULT_BUDGET_MIN = 15

BEST_CAPTION = ("★ **Best layer**: the layer whose closed-form start identifies the *validation* images best (highest "
                "validation MRR, both directions). It is chosen on validation only, so the *test* numbers shown for it "
                "are an honest estimate; ◯ marks the best layer of each model. Horizontal lines: test top-1 of a ridge "
                "from the pixels and from random rectified features, of one repeat decoding the other, and of the "
                "simulator's noiseless rates (oracle, simulated subjects only).")
FEVE_HELP = ("FEVE, fraction of explainable variance explained: of the response variance the repeats say is "
             "predictable (not trial noise), the share a ridge from the layer's features predicts on the test images. "
             "1 = it predicts everything the repeats say is predictable, 0 = no better than each neuron's mean. "
             "Median over the neurons whose explainable fraction (FEV) is at least 0.15; bars: quartiles.")


def jobs():
    from neuroalign.jobs.profile_job import get_profile_jobs

    return get_profile_jobs()


def _fmt(v: float | None, spec: str = ".2f") -> str:
    return "—" if v is None else format(v, spec)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def _size(v: int | None) -> str:
    return "?" if v is None else str(v)


def layer_name(row: ProfileRow) -> str:
    from neuroalign.config import layer_label

    return layer_label(row.model, row.stage, row.block, with_model=False)


def rows_table(profile: Profile | Mapping[str, Any]) -> pd.DataFrame:
    """One row per profiled layer: model, layer, val and test top-1 both ways, val MRR, median FEVE
    with its quartiles and neurons included, seconds; ★ / ◯ the best layer overall / of its model."""
    profile = Profile.from_json(profile)
    out = []
    for i, r in enumerate(profile.rows):
        feve = r.feve or LayerFeve()
        rec = {"best": profile.mark(i), "model": r.model, "layer": layer_name(r)}
        for split, scores in (("val", r.val), ("test", r.test)):
            for d, short in (("image_to_neural", "img→neu"), ("neural_to_image", "neu→img")):
                rec[f"{split} {short}"] = scores.top1(d)
        rec["val MRR"] = r.val_mrr
        rec["median FEVE"] = feve.median
        rec["FEVE q25–q75"] = f"{feve.q25:.2f}–{feve.q75:.2f}" if feve.q25 is not None and feve.q75 is not None \
            else ""
        rec["neurons"] = feve.neurons
        rec["s"] = r.seconds
        rec["note"] = r.error
        out.append(rec)
    return pd.DataFrame(out)


def table_columns() -> dict[str, Any]:
    top1 = {f"{s} {d}": st.column_config.NumberColumn(f"{s} {d}", format="%.3f", help=f"top-1 identification on the "
                                                       f"{'validation' if s == 'val' else 'test'} images, "
                                                       f"{'image → neural' if d == 'img→neu' else 'neural → image'}")
            for s in ("val", "test") for d in ("img→neu", "neu→img")}
    return {"best": st.column_config.TextColumn("best", width=45, help="★ best layer (highest val MRR), ◯ best of "
                                                                          "its model"),
            **top1,
            "val MRR": st.column_config.NumberColumn("val MRR", format="%.3f",
                                                     help="mean reciprocal rank on validation, both directions: "
                                                          "what the best layer is chosen by"),
            "median FEVE": st.column_config.NumberColumn("median FEVE", format="%.3f", help=FEVE_HELP),
            "neurons": st.column_config.TextColumn("neurons", help="neurons with FEV ≥ 0.15 (in the median) of all"),
            "s": st.column_config.NumberColumn("s", format="%.0f", help="seconds this layer took"),
            "note": st.column_config.TextColumn("note", help="why a layer could not be scored")}


def best_row(profile: Profile | Mapping[str, Any]) -> ProfileRow | None:
    return Profile.from_json(profile).best_row


def render_summary(profile: Profile) -> None:
    """The metrics row: the best layer, its test top-1 both ways against the best reference, its median FEVE."""
    from neuroalign.plots.profile import DIRECTIONS

    row = profile.best_row
    if row is None:
        return
    name = row.model if layer_name(row) == "(one layer)" else f"{row.model}, {layer_name(row)}"
    st.markdown(f"**Best layer: {md(name)}** — chosen on the validation images (highest validation MRR); its scores "
                f"on the {_size(profile.split['test'])} test images:")
    cols = st.columns(3)
    for col, (d, label) in zip(cols, DIRECTIONS.items()):
        v = row.test.top1(d)
        linear = [x for x in (profile.reference_top1(k, d) for k in ("ridge", "ridge_random")) if x is not None]
        delta = None if v is None or not linear else f"{v - max(linear):+.2f} vs ridge"
        col.metric(f"Top-1, {label}", _fmt(v), delta=delta,
                   help="test top-1 identification; the delta is against the better of the ridge from the pixels "
                        "and from random rectified features")
    feve = row.feve
    cols[2].metric("Median FEVE", _fmt(None if feve is None else feve.median), help=FEVE_HELP if feve else
                   "needs at least two repeats per image: this subject has none")


def render_profile(profile: Profile | Mapping[str, Any]) -> None:
    """Summary, the score-vs-depth chart (val/test toggle), the FEVE chart, the table of rows."""
    from neuroalign import plots

    profile = Profile.from_json(profile)
    n_rows, n_models = len(profile.rows), len(profile.models)
    split = {k: _size(v) for k, v in profile.split.items()}
    st.caption(f"{n_rows} layer{'s' if n_rows != 1 else ''} of {n_models} image model{'s' if n_models != 1 else ''} · "
               f"{_size(profile.n_images)} images × {_size(profile.n_neurons)} neurons, split "
               f"{split['train']} / {split['val']} / {split['test']} (train / val / test, the split a training run "
               f"uses) · computed in {duration(profile.elapsed_s)}")
    if profile.kept_from_stored:
        st.caption(f"The rows of {md(', '.join(profile.kept_from_stored))} come from an earlier profile of the same "
                   "data (this one profiled the other models).")
    if not profile.complete:
        st.warning(f"This profile is incomplete ({md(profile.stopped or 'stopped')}): it has the layers "
                   "scored before it ended. Run it again with a larger time budget for the rest.",
                   icon=":material/warning:")
    render_summary(profile)
    c = st.columns([3, 3, 2])
    split = c[0].radio("Scores on", list(SPLIT_OPTIONS), format_func=SPLIT_OPTIONS.get, horizontal=True,
                       key=SPLIT_KEY, help="validation: the images the best layer is chosen on; test: untouched")
    x = c[1].radio("x axis", list(X_OPTIONS), format_func=X_OPTIONS.get, horizontal=True, key=X_KEY,
                   help="block: the block's place in the model's forward order; relative depth: that place divided "
                        "by the model's blocks (1 = its last block)")
    st.plotly_chart(plots.profile_chart(profile, split=split, x=x), key="profile.chart")
    st.caption(BEST_CAPTION)
    if profile.has_feve:
        left, right = st.columns([3, 2])
        left.plotly_chart(plots.profile_feve_chart(profile, x=x), key="profile.feve")
        right.markdown("**Encoding: FEVE**")
        right.caption(FEVE_HELP)
        right.caption("Retrieval asks whether the population identifies the image; FEVE asks how much of each "
                      "neuron's reliable response the layer predicts. A layer can do well on one and less well on the "
                      "other.")
    else:
        st.caption("No FEVE: this subject has no repeats (at least two presentations per image are needed).")
    st.subheader("Every layer")
    table = rows_table(profile)
    if "note" in table and not table["note"].astype(bool).any():
        table = table.drop(columns=["note"])
    st.dataframe(table, hide_index=True, column_config=table_columns(), key=TABLE_KEY,
                 height=35 * (min(len(table), 30) + 1) + 3)  # every row in view (up to 30)


# ---- the job ------------------------------------------------------------------------------------------

def _seen_active() -> set[str]:
    return st.session_state.setdefault(SEEN_ACTIVE, set())


def job_line(status) -> str:
    done = f"{status.done} of {status.total} layers" if status.total else f"{status.done} layers"
    parts = [done, f"{duration(status.elapsed_s)} elapsed"]
    if status.eta_s is not None:
        parts.append(f"about {duration(status.eta_s)} left")
    if status.max_seconds:
        parts.append(f"budget {duration(status.max_seconds)}")
    return " · ".join(parts)


def render_job(subject: str, subject_dir: Path) -> Any:
    """The subject's profile job: progress and Stop while it runs (refreshed every 1.5 s; the page
    reloads when it ends), how the last one ended otherwise. Returns its status (None: never run)."""
    status = jobs().status(subject_dir, subject)
    key = str(subject_dir)
    if status is not None and status.active:
        _seen_active().add(key)

        @st.fragment(run_every=1.5)
        def job_box() -> None:
            now = jobs().status(subject_dir, subject)
            if now is None or not now.active:
                st.rerun()  # the profile (or why there is none) is there: draw the page again
            with st.container(border=True):
                head, stop = st.columns([5, 1])
                head.markdown(f"**Profiling {md(subject)}** — {md(now.message)}")
                stop.button("Stop", key=STOP_KEY, icon=":material/stop:", disabled=now.stopping,
                            on_click=_stop, args=(subject_dir,), width="stretch",
                            help="end after the layer it is on; the layers scored so far are kept")
                st.progress(now.progress, text=("stopping after the current layer · " if now.stopping else "")
                            + job_line(now))
                st.caption("Runs in a worker process of the server: you can leave this page or reload it.")

        job_box()
    elif status is not None:
        fresh = key in _seen_active()
        _seen_active().discard(key)
        text = f"Last profile job ({status.state}): {md(status.message)}"
        if status.state == "failed" or status.state == "interrupted":
            st.error(text, icon=":material/error:")
        elif fresh:
            (st.success if status.state == "finished" else st.info)(text, icon=":material/check_circle:")
        else:
            st.caption(text + (f" · {time.strftime('%Y-%m-%d %H:%M', time.localtime(status.finished))}"
                               if status.finished else ""))
    return status


def _stop(subject_dir: Path) -> None:
    try:
        jobs().stop(subject_dir)
    except ValueError as exc:
        st.session_state[ERRORS_KEY] = str(exc)


def _start(subject: str, data_dir: Path) -> None:
    from neuroalign.config import IMAGE_MODEL_DEPTHS

    models = list(st.session_state.get(MODELS_KEY) or [])
    budget = st.session_state.get(BUDGET_KEY)
    try:
        jobs().start(subject, data_dir, models=None if sorted(models) == sorted(IMAGE_MODEL_DEPTHS) else models,
                     layers=st.session_state.get(LAYERS_KEY) or "stages",
                     max_seconds=None if not budget else 60.0 * float(budget))
    except (ValueError, OSError) as exc:
        st.session_state[ERRORS_KEY] = str(exc)


def render_form(subject: str, data_dir: Path, running: bool) -> None:
    """Image models, layers and the time budget; "Run profile" starts the job."""
    from neuroalign.config import IMAGE_MODEL_DEPTHS
    from neuroalign.jobs.profile_job import n_layers

    error = st.session_state.pop(ERRORS_KEY, None)
    if error:
        st.error(md(error), icon=":material/error:")
    c = st.columns([3, 2, 1])
    models = c[0].multiselect("Image models", list(IMAGE_MODEL_DEPTHS), default=list(IMAGE_MODEL_DEPTHS),
                              key=MODELS_KEY, help="the registered image models (`python -m neuroalign image-models` "
                                                   "lists them with their layers)")
    layers = c[1].radio("Layers", list(LAYER_OPTIONS), format_func=LAYER_OPTIONS.get, key=LAYERS_KEY,
                        help="the last block of every stage (quicker), or every block")
    c[2].number_input("Time budget (min)", min_value=1, max_value=24 * 60, value=DEFAULT_BUDGET_MIN, step=1,
                      key=BUDGET_KEY, help="the profile ends after the layer running when this much time has passed; "
                                           "the layers scored so far are kept")
    total = n_layers(models or None, layers) if models else 0
    st.button(f"Run profile ({total} layer{'s' if total != 1 else ''})" if total else "Run profile", key=RUN_KEY,
              type="primary", icon=":material/play_arrow:", disabled=running or not models,
              on_click=_start, args=(subject, data_dir),
              help="a profile of this subject is running" if running else
              "scores every chosen layer with the closed-form start on this subject's own split, in a worker process")
    st.caption("Each layer: the image model's frozen features (cached), the closed-form start on them with its "
               "settings chosen on validation (a training run re-chooses them by 5-fold cross-validation on train + "
               "validation), its identification both ways on validation and test, and FEVE of a ridge from the "
               "features. A training job running at the same time shares the CPU.")
