"""Cached access to subjects, runs and the device for the pages.

Caches are keyed on folder paths plus modification stamps, so a page rerun (every widget click)
re-reads nothing that did not change, and a changed file is picked up on the next rerun.
Subjects are cached as resources (large arrays, never mutated by pages); run data as plain data.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from neuroalign import paths

from neuroalign.training import runs as _runs_io
from neuroalign.ui.summary import RunSummary

logger = logging.getLogger(__name__)

# The run files the pages read (their mtimes key the caches).
RUN_FILES = (_runs_io.STATUS_FILE, _runs_io.RESULTS_FILE, _runs_io.METRICS_FILE, _runs_io.TEST_OUTPUTS,
             _runs_io.CONFIG_FILE, _runs_io.SPLIT_FILE)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def subject_stamp(root: Path, name: str | None = None) -> tuple:
    """A cheap change stamp: the root's entries (names + mtimes), or one subject's data files."""
    if name is not None:
        data = Path(root) / name / "Data"
        return tuple(sorted((p.name, _mtime(p), p.stat().st_size) for p in data.glob("*") if p.is_file())) \
            if data.is_dir() else ()
    root = Path(root)
    if not root.is_dir():
        return ()
    return tuple(sorted((p.name, _mtime(p), _mtime(p / "Data")) for p in root.iterdir()))


def run_stamp(run_dir: Path) -> tuple:
    """Modification times of the run files the pages read."""
    return tuple(_mtime(Path(run_dir) / f) for f in RUN_FILES)


def subject_store():
    """The SubjectStore of the data root in use (`neuroalign.paths.data_dir()`)."""
    from neuroalign.data.store import SubjectStore

    return SubjectStore(paths.data_dir())


@st.cache_data(show_spinner=False, max_entries=16)
def _list_subjects(root: str, stamp: tuple) -> list:
    from neuroalign.data.store import SubjectStore

    return SubjectStore(Path(root)).list()


def list_subjects() -> list:
    """SubjectInfo list of the data root (cached until the root's contents change)."""
    root = paths.data_dir()
    return _list_subjects(str(root), subject_stamp(root))


@st.cache_resource(show_spinner=False, max_entries=3)
def _load_subject(root: str, name: str, stamp: tuple):
    from neuroalign.data.store import SubjectStore

    return SubjectStore(Path(root)).load(name)


def load_subject(name: str):
    """The full Subject (cached as a resource per data-file stamp)."""
    root = paths.data_dir()
    return _load_subject(str(root), name, subject_stamp(root, name))


@st.cache_data(show_spinner=False, max_entries=3)
def _ground_truth(root: str, name: str, stamp: tuple) -> dict | None:
    from neuroalign.data.subject import load_ground_truth

    return load_ground_truth(Path(root) / name)


# How long a listing of the runs root is reused (seconds): the four pages that list runs rerun on
# every click and every polling tick, and a listing reads every run's JSON files. Within this time a
# listing is reused unless the root's entries or the set of live jobs changed (a run folder created
# or deleted, a job started or ended). The listing only reads: adopting live workers and marking
# orphaned runs interrupted is the job manager's (`JobManager.watch`, at its start and in its poll).
RUNS_TTL_S = 3.0


def runs_stamp(root: Path) -> tuple:
    """A cheap change stamp of the runs root: its mtime (entries added or removed), the run folders
    of this process's live jobs, and the current `RUNS_TTL_S`-long time slot (so a listing is
    never older than that)."""
    from neuroalign.ui.jobs_view import job_manager

    try:
        mtime = Path(root).stat().st_mtime_ns
    except OSError:
        mtime = 0
    live = tuple(sorted(str(p) for p in job_manager().live_run_dirs()))
    return mtime, live, int(time.monotonic() // RUNS_TTL_S)


@st.cache_data(show_spinner=False, max_entries=8)
def _listed_runs(root: str, stamp: tuple) -> list:
    return _runs_io.list_runs(Path(root))


def list_runs() -> list:
    """RunInfo list of the runs root, newest first (orphaned active runs already marked interrupted
    by the job manager, which watches this root). Cached: read at most every `RUNS_TTL_S` seconds,
    and again at once when a run folder appears or disappears or a job of this process starts or
    ends (see `runs_stamp`)."""
    root = paths.runs_dir()
    if not root.is_dir():
        return []
    return _listed_runs(str(root), runs_stamp(root))  # runs_stamp's job_manager() watches the root


def invalidate_runs() -> None:
    """Forget the cached run listings (after deleting or changing runs from a page)."""
    _listed_runs.clear()


@st.cache_data(show_spinner=False, max_entries=32)
def _run_summary(run_dir: str, stamp: tuple) -> RunSummary:
    from neuroalign.training.runs import load_run

    rec = load_run(Path(run_dir))
    problems = dict(rec.problems)
    try:
        metrics = list(rec.metrics())
    except ValueError as exc:  # an unreadable metrics.jsonl: the rest of the run is still worth showing
        metrics, problems[_runs_io.METRICS_FILE] = [], str(exc)
    return RunSummary(config=rec.config, split=rec.split, status=rec.status, results=rec.results,
                      metrics=metrics, problems=problems)


def run_summary(run_dir: str | os.PathLike) -> RunSummary:
    """config / split / status / results / metrics of one run (`RunSummary`, cached on mtimes), and
    `problems`: file name -> one-line message for a damaged status.json / results.json /
    metrics.jsonl (read as empty). A damaged config.json or split.json raises (ValueError)."""
    return _run_summary(str(run_dir), run_stamp(Path(run_dir)))


@st.cache_data(show_spinner=False, max_entries=8)
def _run_test_outputs(run_dir: str, stamp: tuple) -> dict[str, np.ndarray]:
    from neuroalign.training.runs import load_run

    out = load_run(Path(run_dir)).test_outputs() or {}
    return {k: np.asarray(v) for k, v in out.items()}


def run_test_outputs(run_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """test_indices / image_maps / neural_maps / similarity / ssim of a finished run (cached)."""
    return _run_test_outputs(str(run_dir), run_stamp(Path(run_dir)))


@st.cache_resource(show_spinner=False)
def device_description() -> str:
    """`neuroalign.training.device.describe_device()`, computed once per process."""
    from neuroalign.training.device import describe_device

    return describe_device()


@dataclass
class RunsTable:
    """Every run as a table row (`tables.runs_frame`) and the damaged ones: run id -> one-line message."""

    frame: pd.DataFrame
    problems: dict[str, str]


def runs_table() -> RunsTable:
    """All runs as a pandas table; a run with damaged files is still a row (state and problem from what
    could be read) and its message is in `problems`."""
    from neuroalign.ui import tables

    runs = list_runs()
    summaries: dict[str, RunSummary] = {}
    problems: dict[str, str] = {}
    for run in runs:
        messages = [run.error] if getattr(run, "error", None) else []
        try:
            summary = run_summary(run.path)
        except (ValueError, FileNotFoundError, OSError) as exc:
            logger.warning("run %s: %s", run.run_id, exc)
            messages.append(str(exc))
            summary = RunSummary(config={"subject": {"name": run.subject}, "created": run.created},
                                 status={"state": "unreadable", "message": str(exc)})
        messages += [m for m in summary.problems.values() if m not in " | ".join(messages)]
        if messages:
            problems[run.run_id] = " | ".join(messages)
            summary = dataclasses.replace(summary, problem=problems[run.run_id])
        summaries[str(run.path)] = summary
    return RunsTable(tables.runs_frame(runs, summaries), problems)


@st.cache_data(show_spinner=False, max_entries=4)
def _subject_stats(root: str, name: str, stamp: tuple) -> dict[str, Any]:
    from neuroalign import plots

    subject = _load_subject(root, name, stamp)
    r = subject.responses
    out: dict[str, Any] = {"mean": r.mean(axis=0, dtype=np.float64), "variance": r.var(axis=0, dtype=np.float64),
                           "reliability": None}
    if subject.repeats is not None and subject.repeats.shape[0] >= 2:
        out["reliability"] = plots.neuron_reliability(subject.repeats)
    out["raster_images"], out["raster_neurons"] = plots.raster_order(r)
    return out


def subject_stats(name: str) -> dict[str, Any]:
    """Per-neuron mean / variance / split-half reliability and a raster display order (cached)."""
    root = paths.data_dir()
    return _subject_stats(str(root), name, subject_stamp(root, name))


# The run files the neuron importance depends on (their mtimes key its cache).
IMPORTANCE_FILES = (_runs_io.BEST_CKPT, _runs_io.TEST_OUTPUTS, _runs_io.NORMALISER_FILE, _runs_io.CONFIG_FILE,
                    _runs_io.SPLIT_FILE, "importance.npz")


@st.cache_data(show_spinner=False, max_entries=8)
def _run_importance(run_dir: str, stamp: tuple, root: str, name: str, subject_stamp_: tuple) -> dict[str, Any]:
    import dataclasses

    from neuroalign.training.run_eval import load_importance, run_importance

    stored = load_importance(run_dir)  # computed by the job over every test image
    if stored is not None:
        return dataclasses.asdict(stored)
    subject = _load_subject(root, name, subject_stamp_)  # a run from before importance was stored
    return dataclasses.asdict(run_importance(run_dir, subject=subject))


def run_importance(run_dir: str | os.PathLike, subject_name: str) -> dict[str, Any]:
    """`neuroalign.training.run_eval.run_importance` of a finished run as plain data, cached on the
    run dir + the mtimes of the files it reads (best.pt, test outputs, normaliser, config, split) and
    the subject's data files. Read from the run's `importance.npz`, which the training job writes over
    every test image; runs from before that are computed here, over every test image too."""
    root = paths.data_dir()
    run_dir = Path(run_dir)
    stamp = tuple(_mtime(run_dir / f) for f in IMPORTANCE_FILES)
    return _run_importance(str(run_dir), stamp, str(root), subject_name, subject_stamp(root, subject_name))


@st.cache_data(show_spinner=False, max_entries=4)
def _true_snr(root: str, name: str, stamp: tuple) -> np.ndarray | None:
    from neuroalign.evaluation.reliability import true_snr

    truth = _ground_truth(root, name, stamp)
    if not truth or "rates" not in truth or "repeats" not in truth:
        return None
    return true_snr(truth["rates"], truth["repeats"])


def true_snr(name: str) -> np.ndarray | None:
    """Per-neuron true SNR `(K,)` of a simulated subject (None without ground truth), cached."""
    root = paths.data_dir()
    return _true_snr(str(root), name, subject_stamp(root, name))


# ---- shared runs (one model over several subjects: training.shared_runs) -------------------------

SHARED_RESULTS = "shared_results.json"
SUBJECTS_DIR = "subjects"
SUBJECT_FILES = (_runs_io.RESULTS_FILE, _runs_io.SPLIT_FILE, _runs_io.TEST_OUTPUTS, _runs_io.NORMALISER_FILE)


def shared_stamp(run_dir: Path, name: str) -> tuple:
    """Modification times of a shared run's files and of one subject's files in it."""
    folder = Path(run_dir) / SUBJECTS_DIR / name
    return (run_stamp(Path(run_dir)), _mtime(Path(run_dir) / SHARED_RESULTS),
            tuple(_mtime(folder / f) for f in SUBJECT_FILES))


def _read_subject_json(path: Path, problems: dict[str, str]) -> Any:
    from neuroalign.training.run_files import RunFileError, read_json_file

    try:
        return read_json_file(path)
    except (RunFileError, OSError) as exc:
        problems[path.name] = str(exc)
        return None


@st.cache_data(show_spinner=False, max_entries=32)
def _shared_subject_summary(run_dir: str, name: str, stamp: tuple) -> RunSummary:
    from neuroalign.training.runs import load_run, read_split

    rec = load_run(Path(run_dir))
    folder = Path(run_dir) / SUBJECTS_DIR / name
    problems: dict[str, str] = {}
    results = _read_subject_json(folder / _runs_io.RESULTS_FILE, problems)
    shared_results = _read_subject_json(Path(run_dir) / SHARED_RESULTS, problems) or {}
    try:
        split = read_split(folder)
    except FileNotFoundError:
        split = None
    except ValueError as exc:
        split, problems[_runs_io.SPLIT_FILE] = None, str(exc)
    records = rec.config.get("subjects") if isinstance(rec.config.get("subjects"), list) else []
    subject = next((s for s in records if isinstance(s, dict) and s.get("name") == name), None)
    if subject is None and isinstance(rec.config.get("subject"), dict) and rec.config["subject"].get("name") == name:
        subject = rec.config["subject"]  # an adapted run records its one subject here
    config = {**rec.config, "subject": subject or {"name": name}}
    return RunSummary(config=config, split=split, status=rec.status, results=results,
                      problems={**rec.problems, **problems},
                      shared={"kind": rec.config.get("kind"), "subject": name,
                              "subjects": shared_subject_names(rec.config), "results": shared_results,
                              "adapted_from": rec.config.get("adapted_from"),
                              "run_subject": (rec.config.get("subject") or {}).get("name")})


def shared_subject_names(config: dict[str, Any]) -> list[str]:
    """The subjects of a shared run's config.json (an adapted run: its one new subject)."""
    if config.get("kind") == "adapted":
        return [str((config.get("subject") or {}).get("name"))]
    return [str(s.get("name")) for s in (config.get("subjects") or []) if isinstance(s, dict) and s.get("name")]


def shared_subject_summary(run_dir: str | os.PathLike, name: str) -> RunSummary:
    """A shared run seen as one subject's run: `run_summary`'s keys with that subject's results,
    split and record (`config["subject"]`), plus `shared`: the run's kind, its subjects, the picked
    one and shared_results.json (cross-subject retrieval). Cached on the files' mtimes."""
    return _shared_subject_summary(str(run_dir), name, shared_stamp(Path(run_dir), name))


@st.cache_data(show_spinner=False, max_entries=16)
def _shared_subject_outputs(run_dir: str, name: str, stamp: tuple) -> dict[str, np.ndarray]:
    from neuroalign.training.run_files import RunFileError

    path = Path(run_dir) / SUBJECTS_DIR / name / _runs_io.TEST_OUTPUTS
    if not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: np.asarray(data[k]) for k in data.files}
    except Exception as exc:  # noqa: BLE001 - zipfile/numpy raise many types for damaged files
        raise RunFileError(path, f"is truncated or corrupt ({type(exc).__name__})") from None


def shared_subject_outputs(run_dir: str | os.PathLike, name: str) -> dict[str, np.ndarray]:
    """`test_indices`, `image_embedding`, `neural_embedding`, `similarity` of one subject of a shared
    run ({} before its evaluation); cached."""
    return _shared_subject_outputs(str(run_dir), name, shared_stamp(Path(run_dir), name))


def is_shared_config(config: dict[str, Any] | None) -> bool:
    """config.json of a shared (or adapted) run."""
    return isinstance(config, dict) and config.get("kind") in ("shared", "adapted")


@st.cache_data(show_spinner=False, max_entries=8)
def _shared_importance(run_dir: str, name: str, stamp: tuple, root: str, subject_stamp_: tuple) -> dict[str, Any]:
    import dataclasses

    from neuroalign.training.shared_importance import shared_importance

    return dataclasses.asdict(shared_importance(run_dir, name, _load_subject(root, name, subject_stamp_)))


def shared_importance(run_dir: str | os.PathLike, name: str) -> dict[str, Any]:
    """Per-neuron importance of subject `name` in a shared run (`training.shared_importance`) as
    plain data, cached on the run's and the subject's files."""
    root = paths.data_dir()
    run_dir = Path(run_dir)
    stamp = (shared_stamp(run_dir, name), _mtime(run_dir / "shared_model.npz"))
    return _shared_importance(str(run_dir), name, stamp, str(root), subject_stamp(root, name))
