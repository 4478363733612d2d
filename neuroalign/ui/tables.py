"""pandas tables and column configs the pages show (subjects, runs, metrics)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd
import streamlit as st

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


def run_path(run: Any) -> Path:
    """The run directory of a RunInfo (or a path)."""
    if isinstance(run, (str, Path)):
        return Path(run)
    for attr in ("path", "run_dir", "dir"):
        value = getattr(run, attr, None)
        if value is not None:
            return Path(value)
    raise ValueError(f"run entry {run!r} has no run directory")


def _get(d: Mapping | None, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, Mapping) or k not in d:
            return None
        d = d[k]
    return d


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
    created = meta.get("created") or status.get("updated")
    try:
        when = pd.to_datetime(created, utc=True).tz_convert(None).to_pydatetime() if created else None
    except (ValueError, TypeError, OverflowError):
        when = None
    return {
        "run": run_dir.name,
        "subject": subject or _get(meta, "subject", "name") or "?",
        "state": status.get("state", "unknown"),
        "top1 img→neu": _get(test, "image_to_neural", "top1"),
        "top1 neu→img": _get(test, "neural_to_image", "top1"),
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
        "path": str(run_dir),
    }


RUN_COLUMNS = {
    "created": st.column_config.DatetimeColumn("created (UTC)", format="YYYY-MM-DD HH:mm"),
    "ridge top1": st.column_config.NumberColumn("ridge top1", format="%.3f", help="pixel ridge-regression baseline"),
    "mean SSIM": st.column_config.NumberColumn("mean SSIM", format="%.3f", help="test SSIM between the two maps"),
    "top1 img→neu": st.column_config.ProgressColumn(
        "top1 img→neu", min_value=0.0, max_value=1.0, format="%.3f",
        help="test top-1 identification, image query → neural candidates"),
    "top1 neu→img": st.column_config.ProgressColumn("top1 neu→img", min_value=0.0, max_value=1.0, format="%.3f"),
    "top5 img→neu": st.column_config.NumberColumn("top5 img→neu", format="%.3f"),
    "mean rank": st.column_config.NumberColumn("mean rank", format="%.1f",
                                               help="mean rank of the true match (1 = best)"),
    "chance top1": st.column_config.NumberColumn("chance top1", format="%.4f"),
    "temperature": st.column_config.NumberColumn("temperature", format="%.3g"),
    "path": None,
}


def runs_frame(runs: Iterable[Any], summaries: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Table of runs; `summaries` maps run dir (str) to `loaders.run_summary` output."""
    rows = []
    for run in runs:
        p = run_path(run)
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


RETRIEVAL_METRICS = ("top1", "top5", "top10", "mean_rank", "median_rank")
DIRECTIONS = {"image_to_neural": "image → neural", "neural_to_image": "neural → image"}
SHORT_DIRECTIONS = {"image_to_neural": "img→neu", "neural_to_image": "neu→img"}
REFERENCE_NAMES = {"ridge": "ridge", "repeat": "repeat", "oracle": "oracle"}
REFERENCE_HELP = {"chance": "expected value for a random ranking",
                  "ridge": "baseline: ridge regression from pixels to responses",
                  "repeat": "baseline: one recorded repeat identifies the other (recording noise ceiling)",
                  "oracle": "ceiling: the simulator's noiseless rates (simulated subjects only)"}


def retrieval_table(results: Mapping[str, Any]) -> pd.DataFrame:
    """Rows: metric × direction; columns: model, chance, then each baseline / the oracle present."""
    test = results.get("test") or {}
    n = test.get("n")
    columns: dict[str, Mapping[str, Any]] = {"model": test}
    for key, label in REFERENCE_NAMES.items():
        ref = (results.get("baselines") or {}).get(key)
        if isinstance(ref, Mapping) and "image_to_neural" in ref:
            columns[label] = ref
    rows = []
    for direction, dlabel in SHORT_DIRECTIONS.items():
        for metric in RETRIEVAL_METRICS:
            row: dict[str, Any] = {"metric": f"{metric} · {dlabel}", "model": _get(test, direction, metric)}
            if metric.startswith("top"):
                row["chance"] = test.get(f"chance_{metric}", (min(int(metric[3:]), n) / n) if n else None)
            else:
                row["chance"] = test.get("chance_mean_rank", (n + 1) / 2 if n else None)
            for label, ref in columns.items():
                if label != "model":
                    row[label] = _get(ref, direction, metric)
            rows.append(row)
    return pd.DataFrame(rows)


def reference_top1(results: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """{"model": {"top1": ..}, "chance": .., baselines..} for the bar chart (image → neural)."""
    test = results.get("test") or {}
    out = {"model": {"top1": _get(test, "image_to_neural", "top1"), "top5": _get(test, "image_to_neural", "top5")},
           "chance": {"top1": test.get("chance_top1"), "top5": test.get("chance_top5")}}
    for key, label in REFERENCE_NAMES.items():
        ref = (results.get("baselines") or {}).get(key)
        if isinstance(ref, Mapping) and "image_to_neural" in ref:
            out[label] = {m: _get(ref, "image_to_neural", m) for m in ("top1", "top5")}
    return {k: {m: (float(v) if v is not None else float("nan")) for m, v in d.items()} for k, d in out.items()}
