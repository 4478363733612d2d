"""Reading background training jobs for the pages (the job manager lives in neuroalign.training)."""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

ACTIVE_STATES = ("queued", "running")


def job_manager():
    """The process-level JobManager (shared by every browser session)."""
    from neuroalign.training.jobs import get_job_manager

    return get_job_manager()


def snapshots() -> list[Any]:
    """All job snapshots, newest first; an empty list when training is not available."""
    try:
        snaps = list(job_manager().snapshots())
    except ImportError as exc:  # training package not installed / importable
        logger.warning("job manager unavailable: %s", exc)
        return []
    return sorted(snaps, key=lambda s: s.started or 0, reverse=True)


def active(snaps: list[Any]) -> list[Any]:
    return [s for s in snaps if s.state in ACTIVE_STATES]


def live_message(snap: Any) -> str:
    """What a job is doing now: the run's status.json message while the job has not reported yet
    (loading data, computing backbone features), else the job's own message."""
    if snap.state == "running" and not snap.history:
        try:
            from neuroalign.training.runs import read_status

            return read_status(snap.run_dir).get("message") or snap.message
        except (OSError, ValueError):
            return snap.message
    return snap.message


def format_eta(seconds: float | None) -> str:
    """'1h 02m', '3m 05s', '12s' or '—'."""
    if seconds is None or not seconds == seconds or seconds < 0:
        return "—"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    if h:
        return f"{h}h {m:02d}m"
    if m:
        return f"{m}m {s:02d}s"
    return f"{s}s"


def progress_text(snap: Any) -> str:
    """One line: state, epoch x/y, ETA, samples/s."""
    parts = [snap.state]
    if snap.epochs:
        parts.append(f"epoch {snap.epoch or 0}/{snap.epochs}")
    if snap.state in ACTIVE_STATES:
        parts.append(f"ETA {format_eta(snap.eta_s)}")
    if snap.samples_per_s:
        parts.append(f"{snap.samples_per_s:,.0f} samples/s")
    return " · ".join(parts)
