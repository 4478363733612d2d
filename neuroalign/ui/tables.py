"""pandas tables and column configs the pages show (subjects, runs, metrics)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd
import streamlit as st

from neuroalign.io_utils import json_number

logger = logging.getLogger(__name__)


def subjects_frame(infos: Iterable[Any]) -> pd.DataFrame:
    """One row per SubjectInfo."""
    rows = []
    for s in infos:
        shape = getattr(s, "image_shape", None)
        rows.append({
            "subject": s.name,
            "images": int(s.n_images) if s.n_images is not None else None,
            "neurons": int(s.n_neurons) if s.n_neurons is not None else None,
            "image size": f"{shape[0]}×{shape[1]}" if shape else "",
            "repeats": bool(s.has_repeats),
            "format": getattr(s, "format", "") or "",
            "simulated": bool(getattr(s, "simulated", False)),
            "source": "simulated demo" if getattr(s, "simulated", False) else "imported",
            "problem": getattr(s, "error", None) or "",
        })
    return pd.DataFrame(rows, columns=["subject", "images", "neurons", "image size", "repeats", "format",
                                       "simulated", "source", "problem"])


SUBJECT_COLUMNS = {
    "subject": st.column_config.TextColumn("subject", help="folder name under the data root"),
    "images": st.column_config.NumberColumn("images", format="%d"),
    "neurons": st.column_config.NumberColumn("neurons", format="%d"),
    "repeats": st.column_config.CheckboxColumn("repeats", help="single-trial repeats available "
                                               "(reliability, repeat baseline)"),
    "simulated": st.column_config.CheckboxColumn("simulated", help="demo subject with known noiseless rates"),
}


def runs_of_subject(runs: Iterable[Any], subject: str) -> int:
    """How many of `runs` (RunInfo list) belong to `subject`."""
    return sum(1 for r in runs if getattr(r, "subject", None) == subject)


def run_path(run: Any) -> Path:
    """The run directory of a RunInfo."""
    return Path(run.path)


def _get(d: Mapping | None, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, Mapping) or k not in d:
            return None
        d = d[k]
    return d


def _linear_columns(results: Any) -> dict[str, Any]:
    """Best linear readout per direction and whether the model beats it (see ui.results_view)."""
    from neuroalign.ui import results_view

    if not isinstance(results, Mapping):
        results = {}
    cols = results_view.best_linear_columns(results)
    verdicts = {v.direction: v.beats for v in results_view.linear_verdicts(results)} if results.get("test") else {}
    if not verdicts or None in verdicts.values():
        beats = ""
    else:
        i2n, n2i = verdicts["image_to_neural"], verdicts["neural_to_image"]
        beats = {(True, True): "both ways", (True, False): "img→neu only", (False, True): "neu→img only",
                 (False, False): "no"}[(i2n, n2i)]
    cols["beats linear"] = beats
    return cols


def _from_folder_name(name: str) -> tuple[str | None, str | None]:
    """(UTC submission time as ISO text, subject) from a run folder's name `<YYYYmmdd-HHMMSS>_<subject>_<hex>`
    (`training.runs.new_run_dir`); (None, None) for other names."""
    import re

    m = re.fullmatch(r"(\d{8})-(\d{6})_(.+)_[0-9a-f]+", name)
    if not m:
        return None, None
    d, t = m.group(1), m.group(2)
    return f"{d[:4]}-{d[4:6]}-{d[6:]}T{t[:2]}:{t[2:4]}:{t[4:]}Z", m.group(3)


def run_row(run_dir: Path, summary: Mapping[str, Any], subject: str | None = None) -> dict[str, Any]:
    """Flat table row of one run: identity, state, key config and test metrics.

    `summary["config"]` is the run's config.json (`{"config": TrainConfig dict, "subject": {...},
    "created", ...}`); `summary["results"]` its results.json.
    """
    meta = summary.get("config") or {}
    cfg = meta.get("config") or {}
    status = summary.get("status") or {}
    results = summary.get("results") or {}
    test = results.get("test", {}) if isinstance(results, Mapping) else {}
    stamp, folder_subject = _from_folder_name(run_dir.name)
    kind = {"shared": " (shared)", "adapted": " (adapted)"}.get(meta.get("kind"), "")  # training.shared_runs
    created = stamp or meta.get("created") or status.get("updated")  # submitted, not when training started
    try:
        when = pd.to_datetime(created, utc=True).tz_convert(None).to_pydatetime() if created else None
    except (ValueError, TypeError, OverflowError):
        when = None
    return {
        "run": run_dir.name,
        "id": run_dir.name.rsplit("_", 1)[-1],
        # a queued or preparing run has no config.json yet: its folder name holds the subject
        "subject": ((subject if subject not in (None, "", "?") else None) or _get(meta, "subject", "name")
                    or folder_subject or "?") + kind,
        "state": status.get("state", "unknown"),
        "top1 img→neu": _get(test, "image_to_neural", "top1"),
        "top1 neu→img": _get(test, "neural_to_image", "top1"),
        **_linear_columns(results),
        "chance top1": test.get("chance_top1"),
        "ridge top1": _get(results, "baselines", "ridge", "image_to_neural", "top1"),
        "top5 img→neu": _get(test, "image_to_neural", "top5"),
        "mean rank": _get(test, "image_to_neural", "mean_rank"),
        "mean SSIM": _get(results, "ssim", "mean"),
        "test n": test.get("n"),
        "created": when,
        "epochs": status.get("epoch"),
        "preset": cfg.get("preset"),
        "backbone": _get(cfg, "image", "backbone"),
        "mode": _get(cfg, "image", "mode"),
        "batch": cfg.get("batch_size"),
        "temperature": _get(cfg, "loss", "temperature"),
        "problem": summary.get("problem") or "",
        "path": str(run_dir),
        "kind": meta.get("kind") or "single",  # shared / adapted: training.shared_runs (no loss curves)
    }


RUN_COLUMNS = {
    "created": st.column_config.DatetimeColumn("created", format="MM-DD HH:mm", width=112,
                                               help="when the run was submitted (UTC; the year is in the run "
                                                    "folder's name)"),
    "state": st.column_config.TextColumn("state", width=74),
    "ridge top1": st.column_config.NumberColumn("ridge top1", format="%.3f", help="pixel ridge-regression baseline"),
    "run": st.column_config.TextColumn("run", pinned=True, help="run folder name (date, time, subject, id)"),
    "id": st.column_config.TextColumn("run", pinned=True, width=62,
                                      help="the id at the end of the run folder name (date_time_subject_id)"),
    "subject": st.column_config.TextColumn("subject", pinned=True),
    "best linear img→neu": st.column_config.NumberColumn(
        "linear img→neu", format="%.3f", width=108,
        help="test top-1 (image → neural) of the best linear readout: the best of the ridge baselines of the run "
             "(pixels, random features, backbone features)"),
    "best linear neu→img": st.column_config.NumberColumn(
        "linear neu→img", format="%.3f", width=108, help="the same, neural → image"),
    "best linear": st.column_config.TextColumn("linear = ", width=105,
                                               help="which ridge baseline is the best linear readout"),
    "beats linear": st.column_config.TextColumn(
        "beats linear", width=95, help="in which directions the model's test top-1 is above the best linear readout's"),
    "mean SSIM": st.column_config.NumberColumn("mean SSIM", format="%.3f", help="test SSIM between the two maps"),
    "top1 img→neu": st.column_config.ProgressColumn(
        "top1 img→neu", min_value=0.0, max_value=1.0, format="%.3f", width=92,
        help="test top-1 identification, image query → neural candidates"),
    "top1 neu→img": st.column_config.ProgressColumn("top1 neu→img", min_value=0.0, max_value=1.0, format="%.3f",
                                                    width=92),
    "top5 img→neu": st.column_config.NumberColumn("top5 img→neu", format="%.3f"),
    "mean rank": st.column_config.NumberColumn("mean rank", format="%.1f",
                                               help="mean rank of the true match (1 = best)"),
    "chance top1": st.column_config.NumberColumn("chance", format="%.4f", width=60, help="top-1 of a random ranking"),
    "test n": st.column_config.NumberColumn("test n", format="%d", width=50, help="test images"),
    "temperature": st.column_config.NumberColumn("temperature", format="%.3g"),
    "problem": st.column_config.TextColumn("problem", help="damaged files of the run (what could be read is shown)"),
    "path": None,
    "kind": None,
}


# The Runs table's columns shown by default (narrow enough for a 1,024 px window); the others on request.
RUN_DEFAULT_COLUMNS = ("id", "subject", "state", "top1 img→neu", "top1 neu→img", "beats linear", "created")
RUN_OPTIONAL_COLUMNS = ("best linear img→neu", "best linear neu→img", "best linear", "chance top1", "ridge top1",
                        "top5 img→neu", "mean rank", "mean SSIM", "test n", "epochs", "preset", "backbone", "mode",
                        "batch", "temperature", "run")


def runs_frame(runs: Iterable[Any], summaries: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Table of runs; `summaries` maps run dir (str) to `loaders.run_summary` output."""
    rows = []
    for run in runs:
        p = Path(run.path)
        summary = summaries.get(str(p))
        if summary is None:
            continue
        rows.append(run_row(p, summary, getattr(run, "subject", None)))
    df = pd.DataFrame(rows)
    if not df.empty:
        df = df.sort_values("created", ascending=False, na_position="last").reset_index(drop=True)
    return df


def best_per_subject(df: pd.DataFrame) -> pd.DataFrame:
    """The finished run with the highest image→neural top-1 for each subject."""
    if df.empty or "top1 img→neu" not in df:
        return df
    done = df[df["top1 img→neu"].notna()]
    if done.empty:
        return done
    idx = done.groupby("subject")["top1 img→neu"].idxmax()
    return done.loc[idx].sort_values("subject").reset_index(drop=True)


def image_choice_frame(record: Mapping[str, Any] | None) -> pd.DataFrame | None:
    """What image model "auto" compared for a run (config.json → `image_choice`): one row per candidate
    with its validation MRR and top-1 (pooled over subjects for a shared run), its feature count and
    seconds, and whether it was chosen, skipped (time budget) or could not read the images. None when
    the run did not choose (a fixed image model) or the record is not a list of candidates."""
    choice = record.get("image_choice") if isinstance(record, Mapping) else None
    rows = choice.get("candidates") if isinstance(choice, Mapping) else None
    if not isinstance(rows, list) or not rows:
        return None
    chosen = tuple(choice.get(k) for k in ("backbone", "stage", "block", "transform"))
    scored = [r for r in rows if isinstance(r, Mapping)]

    def score(r: Mapping) -> tuple[float | None, float | None]:
        return (json_number(r.get("val_mrr", r.get("val_mrr_pooled"))), json_number(r.get("val_top1", r.get("val_top1_pooled"))))

    # a shared run's rows name no layer fields: its winner is the best pooled score (its rule; first on ties)
    best = max((r for r in scored if score(r)[0] is not None), key=lambda r: (score(r)[0], score(r)[1] or 0.0),
               default=None)
    out = []
    for r in scored:
        mrr, top1 = score(r)
        if isinstance(r.get("skipped"), str):
            note = f"skipped ({r['skipped']})"
        elif isinstance(r.get("error"), str):
            note = f"could not read the images: {r['error']}"
        else:
            layer = tuple(r.get(k) for k in ("backbone", "stage", "block", "transform"))
            note = "chosen" if (layer == chosen if "backbone" in r else r is best) else ""
        n_feat = json_number(r.get("n_features"))
        seconds = [json_number(r.get(k)) for k in ("features_s", "fit_s")]
        out.append({"image model": str(r.get("model", "?")), "outcome": note, "val MRR": mrr, "val top-1": top1,
                    "features": int(n_feat) if n_feat is not None else None,
                    "seconds": sum(s for s in seconds if s is not None) if any(s is not None for s in seconds) else None})
    return pd.DataFrame(out)


IMAGE_CHOICE_COLUMNS = {
    "image model": st.column_config.TextColumn(width="medium", help="a registered model's layer, or two read side "
                                                                    "by side (their features concatenated)"),
    "outcome": st.column_config.TextColumn(help="chosen (trained), skipped (the time budget: not expected to end within "
                                                "half of it and before the evaluation) or why it could not read the images"),
    "val MRR": st.column_config.NumberColumn(
        format="%.3f", help="mean reciprocal rank of the closed-form start on the validation images, mean of both "
                            "retrieval directions (a shared run: pooled over its subjects); the test images play no part"),
    "val top-1": st.column_config.NumberColumn(format="%.3f", help="validation top-1, mean of both directions"),
    "features": st.column_config.NumberColumn(format="%d", help="image features the readout reads (pooled grid)"),
    "seconds": st.column_config.NumberColumn(format="%.1f", help="features (0 when cached) plus the fit"),
}


def start_caption(results: Mapping[str, Any] | None) -> str | None:
    """One line on the closed-form start a run began from (results.json → training.linear_start):
    its ridge strength, rank, whitening and how they were chosen, and how much the population-mean
    direction was damped for the repeat noise along it. None when the run had no such start (other
    presets, fine-tuning) or the record is damaged."""
    training = results.get("training") if isinstance(results, Mapping) else None
    rep = training.get("linear_start") if isinstance(training, Mapping) else None
    if not isinstance(rep, Mapping):
        return None
    alpha, rank = json_number(rep.get("alpha_relative")), json_number(rep.get("rank"))
    whiten = rep.get("whiten")
    if alpha is None or rank is None:
        return None
    parts = [f"Closed-form start: ridge strength {alpha:.2g} (relative to the largest), rank {int(rank)}"]
    if isinstance(whiten, (list, tuple)) and len(whiten) == 2 and all(json_number(w) is not None for w in whiten):
        parts.append(f"whitening exponents {json_number(whiten[0]):g} (image) / {json_number(whiten[1]):g} (neural)")
    if isinstance(rep.get("selection"), str):
        parts.append(f"chosen by {rep['selection']}")
    line = ", ".join(parts) + "."
    shrink, share = json_number(rep.get("population_shrink")), json_number(rep.get("population_noise_share"))
    if share is not None and shrink is not None:
        noise = f"the repeat noise along it is {share:.2g}× an average direction's"
        line += (f" Population-mean direction damped to {shrink:.2f} ({noise})." if shrink < 1.0 else
                 f" Population-mean direction not damped ({noise}).")
    elif shrink is not None:
        line += " Population-mean direction not damped (no repeats to estimate its noise from)."
    return line
