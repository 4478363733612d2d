"""Reading background training jobs for the pages (the job manager lives in neuroalign.jobs)."""

from __future__ import annotations

import logging
import statistics
import threading
import time
from typing import Any

logger = logging.getLogger(__name__)

ACTIVE_STATES = ("queued", "running")
STOPPING_MESSAGE = "stopping — restoring the best checkpoint and evaluating"
SHARED_STOPPING_MESSAGE = "stopping at the end of the current phase (a closed-form fit: nothing to restore)"

def request_stop(job_id: str) -> None:
    """Ask the job manager to stop a job; its snapshots say `stopping` until it has ended."""
    job_manager().stop(job_id)


def is_stopping(snap: Any) -> bool:
    """A stop was requested for this still-running job (the job manager's `JobSnapshot.stopping`)."""
    return bool(getattr(snap, "stopping", False)) and snap.state == "running"


def job_manager():
    """The process-level JobManager (shared by every browser session), watching the runs root: it
    adopts live workers and marks orphaned runs interrupted there at once the first time, then in
    its own poll (`JobManager.watch`), so no page read has to."""
    from neuroalign import paths
    from neuroalign.jobs.manager import get_job_manager

    manager = get_job_manager()
    manager.watch(paths.runs_dir())
    return manager


# Runs a Resume can be offered for: ended without finishing (a Stop, the server's exit, a crash
# or kill) and holding the `last.pt` a resume continues from.
RESUMABLE_STATES = ("stopped", "interrupted", "failed")


def resume_blocker(run_dir: Any, state: str) -> str | None:
    """Why a run cannot be resumed from the dashboard now (one line), None when it can."""
    from pathlib import Path

    from neuroalign.training.runs import LAST_CKPT

    run_dir = Path(run_dir)
    if state not in RESUMABLE_STATES:
        return f"only {', '.join(RESUMABLE_STATES)} runs can be resumed; this one is {state}"
    if not (run_dir / LAST_CKPT).is_file():
        return f"{run_dir.name} has no {LAST_CKPT} (it ended before its first epoch); start a new run instead"
    if any(s.state in ACTIVE_STATES and str(s.run_dir) == str(run_dir) for s in snapshots()):
        return f"{run_dir.name} is being trained by a job right now"
    return None


def request_resume(run_dir: Any) -> str:
    """Queue a job that continues the run from its `last.pt` in the same folder; returns its job id
    (ValueError / FileNotFoundError with the reason when it cannot, e.g. its subject is busy)."""
    return job_manager().resume(run_dir)


def _job_number(snap: Any) -> int:
    """The counter of 'job-12' (the order jobs were submitted in: the queue's order)."""
    tail = str(snap.job_id).rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def order(snaps: list[Any]) -> list[Any]:
    """Running jobs (newest first), then queued ones in the order they will start, then ended ones
    (newest first): a queued job never sits below a finished one."""
    rank = {"running": 0, "queued": 1}
    return sorted(snaps, key=lambda s: (rank.get(s.state, 2),
                                        _job_number(s) if s.state == "queued"
                                        else -(s.finished or s.started or 0) if s.state not in ACTIVE_STATES
                                        else -(s.started or 0)))


def snapshots() -> list[Any]:
    """All job snapshots in `order`; an empty list when training is not available."""
    try:
        snaps = list(job_manager().snapshots())
    except ImportError as exc:  # training package not installed / importable
        logger.warning("job manager unavailable: %s", exc)
        return []
    return order(snaps)


def active(snaps: list[Any]) -> list[Any]:
    return [s for s in snaps if s.state in ACTIVE_STATES]


def running(snaps: list[Any]) -> list[Any]:
    """Jobs training (or evaluating) now; queued ones are not."""
    return [s for s in snaps if s.state == "running"]


def queued(snaps: list[Any]) -> list[Any]:
    """Jobs waiting for a free slot, first to start first."""
    return sorted((s for s in snaps if s.state == "queued"), key=_job_number)


def queue_position(snap: Any, snaps: list[Any]) -> int | None:
    """1 for the queued job that starts next, 2 for the one after, ...; None when not queued."""
    if snap.state != "queued":
        return None
    ids = [s.job_id for s in queued(snaps)]
    return ids.index(snap.job_id) + 1 if snap.job_id in ids else None


def counts_text(snaps: list[Any]) -> str:
    """'1 running, 2 queued' / '1 running' / '2 queued'."""
    parts = [f"{n} {what}" for n, what in ((len(running(snaps)), "running"), (len(queued(snaps)), "queued")) if n]
    return ", ".join(parts)


MAX_ENDED_CARDS = 6  # ended jobs shown as cards on the Train page (the Runs page has them all)


def cards(snaps: list[Any], show_ended: bool = True, max_ended: int = MAX_ENDED_CARDS) -> tuple[list[Any], int]:
    """The jobs the Train page draws a card for, in `order`, and how many ended ones were left out:
    one card per run folder (a resumed run: its newest job), none for a run deleted since it ended,
    at most `max_ended` ended ones (none without `show_ended`)."""
    shown, seen, left_out = [], set(), 0
    for snap in order(snaps):
        folder = str(snap.run_dir)
        if folder in seen:
            continue
        seen.add(folder)
        if snap.state in ACTIVE_STATES:
            shown.append(snap)
            continue
        from pathlib import Path

        if not Path(folder).is_dir():  # deleted on the Runs page (or by hand)
            continue
        if show_ended and sum(s.state not in ACTIVE_STATES for s in shown) < max_ended:
            shown.append(snap)
        else:
            left_out += 1
    return shown, left_out


def is_evaluating(snap: Any) -> bool:
    """A running job past its training: evaluating on the test split (e.g. a worker adopted after a
    server restart that was evaluating); no ETA, nothing left for a Stop to cut short."""
    if snap.state != "running":
        return False
    message = str(getattr(snap, "message", "") or "").lower()
    return (message.startswith("evaluating") or "evaluating on the test split" in message
            or message.startswith("computing which neurons drive"))  # the importance step after it


# status.json of in-thread jobs, read again only when the file changed: (mtime_ns, size, inode) and
# (message, mtime); worker jobs need no read at all (their snapshot's message follows status.json).
_status_cache: dict[str, tuple[tuple[int, int, int], tuple[str, float]]] = {}
_status_cache_lock = threading.Lock()
STALL_AFTER_S = 60.0  # a running job with nothing new for this long gets a "no progress" note


def _status_message(run_dir: Any) -> tuple[str, float] | None:
    """(message, mtime) of a run's status.json: one stat per call, a read only when it changed."""
    import os

    path = os.path.join(str(run_dir), "status.json")
    try:
        st = os.stat(path)
    except OSError:
        return None
    sig = (st.st_mtime_ns, st.st_size, st.st_ino)
    with _status_cache_lock:
        hit = _status_cache.get(path)
        if hit is not None and hit[0] == sig:
            return hit[1]
    try:
        from neuroalign.training.runs import read_status

        value = (str(read_status(run_dir).get("message") or ""), st.st_mtime)
    except (OSError, ValueError):
        return None
    with _status_cache_lock:
        if len(_status_cache) > 256:
            _status_cache.clear()
        _status_cache[path] = (sig, value)
    return value


def _idle_text(seconds: float) -> str:
    minutes = int(seconds // 60)
    return f"{minutes} min" if minutes >= 1 else f"{int(seconds)} s"


def stall_note(snap: Any, last_activity: float | None = None, now: float | None = None) -> str | None:
    """For a running job with no new metrics record and no status change for STALL_AFTER_S: 'no
    progress for 2 min — the job is still alive (pid 123)' or '... — the worker process is gone'."""
    if snap.state != "running":
        return None
    last = max([t for t in (getattr(snap, "last_activity", None), last_activity, snap.started) if t] or [0.0])
    idle = (time.time() if now is None else now) - last
    if not last or idle < STALL_AFTER_S:
        return None
    alive, pid = getattr(snap, "alive", None), getattr(snap, "pid", None)
    thread = getattr(snap, "kind", "thread") == "thread"
    if alive is False:
        gone = "the job's thread is gone" if thread else "the worker process is gone"
        return f"no progress for {_idle_text(idle)} — {gone}"
    where = f"pid {pid}" if pid else "in the server process"
    return f"no progress for {_idle_text(idle)} — the job is still alive ({where})"


def live_message(snap: Any) -> str:
    """What a job is doing now: a worker job's message (it follows status.json); for an in-thread
    job that has not reported yet (loading data, computing backbone features) the run's status.json
    message (read once per change, not per call); plus a note when nothing has progressed for a while."""
    if is_stopping(snap):
        return SHARED_STOPPING_MESSAGE if getattr(snap, "mode", "train") != "train" else STOPPING_MESSAGE
    message, changed = snap.message, None
    if snap.state == "running" and getattr(snap, "kind", "thread") == "thread":
        status = _status_message(snap.run_dir)
        if status is not None:
            changed = status[1]
            if not snap.history and status[0]:
                message = status[0]
    note = stall_note(snap, changed)
    return f"{message} · {note}" if note and message else (note or message)


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


def progress_text(snap: Any, snaps: list[Any] | None = None) -> str:
    """One line: state (or 'stopping' / 'evaluating'; a queued job's place in the queue when `snaps`
    are given), epoch x/y ('preparing' before the first step), ETA (while a budgeted job prepares and
    has none yet: what is left of its time budget), training samples/s."""
    stopping, evaluating = is_stopping(snap), is_evaluating(snap)
    parts = ["stopping" if stopping else "evaluating" if evaluating else snap.state]
    position = queue_position(snap, snaps) if snaps is not None else None
    if position is not None:
        parts[0] = "queued · next to start" if position == 1 else f"queued · {_ordinal(position)} in line"
    preparing = (snap.state == "running" and not stopping and not evaluating and snap.eta_s is None
                 and not snap.epoch and getattr(snap, "mode", "train") == "train")  # before the first step
    if preparing:
        parts.append("preparing")
    elif snap.epochs:
        parts.append(f"epoch {snap.epoch or 0}/{snap.epochs}")
    if getattr(snap, "mode", "train") != "train":  # a shared fit reports phases, not epochs
        if snap.state == "running" and not stopping:
            parts.append(f"{100 * float(snap.progress or 0.0):.0f} % done")
    elif snap.state == "running" and not stopping and not evaluating:
        budget, started = getattr(snap, "budget_s", None), getattr(snap, "started", None)
        if snap.eta_s is None and budget and started:  # preparing (features, the image-model choice): no
            # ETA yet, but the budget bounds the job (its clock starts a few seconds after the worker's)
            left = budget - (time.time() - started)
            parts.append(f"{format_eta(left)} of the time budget left" if left > 0 else "time budget used up")
        else:
            parts.append(f"ETA {format_eta(snap.eta_s)}")
    rate = training_throughput(snap)
    if rate:
        parts.append(f"{rate:,.0f} samples/s training")
    return " · ".join(parts)


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"
