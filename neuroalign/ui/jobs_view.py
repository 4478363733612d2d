"""Reading background training jobs for the pages (the job manager lives in neuroalign.training)."""

from __future__ import annotations

import logging
import statistics
import threading
from typing import Any

logger = logging.getLogger(__name__)

ACTIVE_STATES = ("queued", "running")
STOPPING_MESSAGE = "stopping — restoring the best checkpoint and evaluating"

# Jobs a Stop was requested for, process-wide (every browser tab sees it). The job manager's
# snapshot has no such flag and the trainer's next step overwrites its "stopping" message, so the
# dashboard remembers the request itself until the job has ended.
_stopping: set[tuple[str, str]] = set()
_stopping_lock = threading.Lock()


def _stop_key(snap: Any) -> tuple[str, str]:
    return (snap.job_id, str(snap.run_dir))  # job ids restart with each job manager; run folders do not


def request_stop(job_id: str) -> None:
    """Ask the job manager to stop a job and remember that it is stopping."""
    snap = job_manager().stop(job_id)
    with _stopping_lock:
        _stopping.add(_stop_key(snap))


def is_stopping(snap: Any) -> bool:
    """A stop was requested for this still-running job."""
    with _stopping_lock:
        if snap.state != "running":
            _stopping.discard(_stop_key(snap))
            return False
        return _stop_key(snap) in _stopping


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
    if is_stopping(snap):
        return STOPPING_MESSAGE
    if snap.state == "running" and not snap.history:
        try:
            from neuroalign.training.runs import read_status

            return read_status(snap.run_dir).get("message") or snap.message
        except (OSError, ValueError):
            return snap.message
    return snap.message


def job_label(snap: Any) -> str:
    """How a job is named in charts and pickers: 'subject (job id)'."""
    return f"{snap.subject} ({snap.job_id})"


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


def training_throughput(snap: Any) -> float | None:
    """Samples/s of the training steps: the median of the per-log-interval rates of the step records
    (each covers training steps only), so neither the once-per-subject preparation nor validation
    pulls it down; the job's last reported rate when there are no step records."""
    rates = [float(r["samples_per_s"]) for r in (snap.history or [])
             if r.get("event") == "step" and isinstance(r.get("samples_per_s"), (int, float))
             and r["samples_per_s"] > 0]
    if rates:
        return statistics.median(rates)
    return float(snap.samples_per_s) if snap.samples_per_s else None


def progress_text(snap: Any) -> str:
    """One line: state (or 'stopping'), epoch x/y, ETA, training samples/s."""
    stopping = is_stopping(snap)
    parts = ["stopping" if stopping else snap.state]
    if snap.epochs:
        parts.append(f"epoch {snap.epoch or 0}/{snap.epochs}")
    if snap.state in ACTIVE_STATES and not stopping:
        parts.append(f"ETA {format_eta(snap.eta_s)}")
    rate = training_throughput(snap)
    if rate:
        parts.append(f"{rate:,.0f} samples/s training")
    return " · ".join(parts)
