"""Background training jobs at process level (what the dashboard drives).

One `JobManager` per process (`get_job_manager()`): every browser session sees the same jobs.
Each job trains one subject in its own thread through `pipeline.run_training`, writing its run
folder as it goes; the manager keeps a thread-safe record that pages poll with `snapshots()`.

Scheduling: at most one active (queued or running) job per subject -- starting a second one for
the same subject is a ValueError. Jobs of different subjects run in parallel up to
`max_parallel` (default 1: one GPU / a few CPU cores are best used by one run at a time); the
rest wait in a FIFO queue with state `queued`. Stopping is graceful: the trainer finishes its
step, restores the best checkpoint and still evaluates. Jobs never call Streamlit.

Runs on disk stay the source of truth: `sync_runs(runs_dir)` marks runs that claim to be
queued/running but have no live job (e.g. after a server restart) as `interrupted`, and
`resume(run_dir)` continues such a run from its `last.pt`.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from neuroalign.config import TrainConfig
from neuroalign.training import runs as runs_io

logger = logging.getLogger(__name__)

MAX_STEP_HISTORY = 5000  # per-step records kept in memory per job (epoch records are all kept)

Runner = Callable[..., Path]


@dataclass(frozen=True)
class JobSnapshot:
    """A consistent copy of a job's state; safe to read from any thread."""

    job_id: str
    subject: str
    run_dir: Path
    state: str  # queued | running | finished | failed | stopped
    message: str
    progress: float
    epoch: int
    epochs: int
    eta_s: float | None
    samples_per_s: float | None
    history: list[dict[str, Any]]
    error: str | None
    started: float | None
    finished: float | None

    @property
    def active(self) -> bool:
        return self.state in runs_io.ACTIVE_STATES


@dataclass
class _Job:
    job_id: str
    subject: str
    run_dir: Path
    config: TrainConfig
    data_dir: Path
    runs_dir: Path
    resume: bool
    stop_event: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    done: threading.Event = field(default_factory=threading.Event)
    state: str = "queued"
    message: str = "waiting for a free slot"
    progress: float = 0.0
    epoch: int = 0
    eta_s: float | None = None
    samples_per_s: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    n_steps: int = 0
    error: str | None = None
    started: float | None = None
    finished: float | None = None


class JobManager:
    """Starts, tracks and stops training jobs; all public methods are thread-safe."""

    def __init__(self, max_parallel: int = 1, runner: Runner | None = None) -> None:
        if max_parallel < 1:
            raise ValueError(f"max_parallel must be >= 1, got {max_parallel}")
        self.max_parallel = max_parallel
        self._runner = runner
        self._lock = threading.RLock()
        self._jobs: dict[str, _Job] = {}
        self._queue: deque[str] = deque()
        self._ids = itertools.count(1)

    # ---- starting -------------------------------------------------------------------------
    def start(self, subject: str, config: TrainConfig, data_dir: str | Path, runs_dir: str | Path) -> str:
        """Queue a training job for `subject`; returns its job id. ValueError if one is active."""
        config.validate()
        if self._runner is None:  # fail fast in the caller's thread on an unknown subject
            from neuroalign.data import SubjectStore

            SubjectStore(data_dir).path(subject)
        with self._lock:
            self._check_free(subject)
            run_dir = runs_io.new_run_dir(runs_dir, subject)
            runs_io.write_status(run_dir, "queued", "waiting for a free slot", epochs=config.epochs)
            return self._add(_Job(f"job-{next(self._ids)}", subject, run_dir, config, Path(data_dir),
                                  Path(runs_dir), resume=False))

    def resume(self, run_dir: str | Path, data_dir: str | Path | None = None) -> str:
        """Continue an interrupted/stopped run from its `last.pt` in the same folder."""
        record = runs_io.load_run(run_dir)
        subject = (record.config.get("subject") or {}).get("name")
        if not subject:
            raise ValueError(f"{run_dir} has no config.json with a subject; cannot resume")
        if not (Path(run_dir) / runs_io.LAST_CKPT).is_file():
            raise FileNotFoundError(f"{Path(run_dir) / runs_io.LAST_CKPT} not found; nothing to resume from")
        with self._lock:
            self._check_free(subject)
            if record.status.get("state") in runs_io.ACTIVE_STATES and self._owner(Path(run_dir)) is not None:
                raise ValueError(f"run {Path(run_dir).name} is already active")
            runs_io.write_status(run_dir, "queued", "waiting to resume")
            data = Path(data_dir) if data_dir else Path((record.config.get("subject") or {}).get("path", ".")).parent
            return self._add(_Job(f"job-{next(self._ids)}", subject, Path(run_dir), record.train_config(), data,
                                  Path(run_dir).parent, resume=True))

    def _check_free(self, subject: str) -> None:
        for job in self._jobs.values():
            if job.subject == subject and job.state in runs_io.ACTIVE_STATES:
                raise ValueError(f"subject {subject!r} already has an active job ({job.job_id}, {job.state}); "
                                 "stop it or wait for it to finish")

    def _owner(self, run_dir: Path) -> _Job | None:
        for job in self._jobs.values():
            if job.run_dir.resolve() == run_dir.resolve() and job.state in runs_io.ACTIVE_STATES:
                return job
        return None

    def _add(self, job: _Job) -> str:
        self._jobs[job.job_id] = job
        self._queue.append(job.job_id)
        self._schedule()
        return job.job_id

    def _schedule(self) -> None:
        """Start queued jobs while there are free slots (caller holds the lock)."""
        running = sum(1 for j in self._jobs.values() if j.state == "running")
        while self._queue and running < self.max_parallel:
            job = self._jobs[self._queue.popleft()]
            job.state, job.message, job.started = "running", "starting", time.time()
            job.thread = threading.Thread(target=self._run, args=(job,), name=f"neuroalign-{job.job_id}", daemon=True)
            job.thread.start()
            running += 1

    # ---- the worker thread ----------------------------------------------------------------
    def _callback(self, job: _Job) -> Callable[[str, dict[str, float]], None]:
        def callback(event: str, values: dict[str, float]) -> None:
            record = {"event": event, **values}
            with self._lock:
                job.progress = float(values.get("progress", job.progress))
                job.epoch = int(values.get("epoch", job.epoch))
                job.eta_s = values.get("eta_s", job.eta_s)
                job.samples_per_s = values.get("samples_per_s", job.samples_per_s)
                job.message = f"epoch {job.epoch}/{job.config.epochs}"
                if event == "step":
                    job.n_steps += 1
                    if job.n_steps > MAX_STEP_HISTORY:  # drop the oldest step record, keep epochs
                        for i, old in enumerate(job.history):
                            if old.get("event") == "step":
                                del job.history[i]
                                break
                job.history.append(record)
        return callback

    def _run(self, job: _Job) -> None:
        try:
            extra: dict[str, Any] = {}
            if self._runner is None:
                from neuroalign import paths
                from neuroalign.training import pipeline

                runner = pipeline.resume_training if job.resume else pipeline.run_training
                extra["cache_dir"] = paths.cache_dir()  # frozen features computed once per subject, kept on disk
            else:
                runner = self._runner
            if job.resume:
                runner(job.run_dir, data_dir=job.data_dir, callback=self._callback(job), stop_event=job.stop_event,
                       **extra)
            else:
                runner(job.subject, job.config, job.data_dir, job.runs_dir, callback=self._callback(job),
                       stop_event=job.stop_event, run_dir=job.run_dir, **extra)
            status = runs_io.read_status(job.run_dir)
            state = status.get("state", "finished")
            if state in runs_io.ACTIVE_STATES:  # a runner that did not write a final status
                state = "stopped" if job.stop_event.is_set() else "finished"
            final = (state, status.get("message", ""), None)
        except Exception as exc:  # a job must never take the server down; the message is shown
            logger.exception("job %s (%s) failed", job.job_id, job.subject)
            final = ("failed", f"{type(exc).__name__}: {exc}", f"{type(exc).__name__}: {exc}")
            if runs_io.read_status(job.run_dir).get("state") != "failed":
                runs_io.write_status(job.run_dir, "failed", final[1])
        with self._lock:
            job.state, job.message, job.error = final
            if job.state == "finished":
                job.progress = 1.0
            job.finished = time.time()
            job.done.set()
            self._schedule()

    # ---- queries and control --------------------------------------------------------------
    def _snapshot(self, job: _Job) -> JobSnapshot:
        return JobSnapshot(job.job_id, job.subject, job.run_dir, job.state, job.message, job.progress, job.epoch,
                           job.config.epochs, job.eta_s, job.samples_per_s, [dict(h) for h in job.history],
                           job.error, job.started, job.finished)

    def get(self, job_id: str) -> JobSnapshot:
        with self._lock:
            if job_id not in self._jobs:
                raise ValueError(f"unknown job {job_id!r}; known: {', '.join(self._jobs) or 'none'}")
            return self._snapshot(self._jobs[job_id])

    def snapshots(self) -> list[JobSnapshot]:
        """All jobs of this process, newest first."""
        with self._lock:
            return [self._snapshot(j) for j in reversed(list(self._jobs.values()))]

    def active_for(self, subject: str) -> JobSnapshot | None:
        with self._lock:
            for job in self._jobs.values():
                if job.subject == subject and job.state in runs_io.ACTIVE_STATES:
                    return self._snapshot(job)
        return None

    def stop(self, job_id: str) -> JobSnapshot:
        """Ask a job to stop: a queued job is cancelled at once, a running one stops after its step."""
        with self._lock:
            if job_id not in self._jobs:
                raise ValueError(f"unknown job {job_id!r}")
            job = self._jobs[job_id]
            job.stop_event.set()
            if job.state == "queued":
                self._queue.remove(job_id)
                job.state, job.message, job.finished = "stopped", "cancelled before it started", time.time()
                runs_io.write_status(job.run_dir, "stopped", job.message)
                job.done.set()
            elif job.state == "running":
                job.message = "stopping: restoring the best checkpoint and evaluating"
            return self._snapshot(job)

    def wait(self, job_id: str, timeout: float | None = None) -> JobSnapshot:
        """Block until the job ends (or `timeout` seconds pass); returns its snapshot."""
        with self._lock:
            if job_id not in self._jobs:
                raise ValueError(f"unknown job {job_id!r}")
            done = self._jobs[job_id].done
        done.wait(timeout)
        return self.get(job_id)

    def live_run_dirs(self) -> list[Path]:
        with self._lock:
            return [j.run_dir for j in self._jobs.values() if j.state in runs_io.ACTIVE_STATES]

    def sync_runs(self, runs_dir: str | Path) -> list[runs_io.RunInfo]:
        """List runs on disk after marking orphaned queued/running ones as interrupted."""
        with self._lock:  # no job can start between reading the live set and marking
            runs_io.mark_interrupted(runs_dir, self.live_run_dirs())
        return runs_io.list_runs(runs_dir)


_manager: JobManager | None = None
_manager_lock = threading.Lock()


def get_job_manager() -> JobManager:
    """The process-level JobManager (created on first use)."""
    global _manager
    with _manager_lock:
        if _manager is None:
            _manager = JobManager()
        return _manager
