"""A job's record in the manager (`Job`), its read-only copy for the pages (`JobSnapshot`), and
how progress records fold into it (`apply_records`). The manager's lock guards every `Job`; the
functions here expect it held."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neuroalign.config import TrainConfig
from neuroalign.io_utils import json_number as number
from neuroalign.training import runs as runs_io

MAX_STEP_HISTORY = 5000  # per-step records kept in memory per job (epoch records are all kept)


@dataclass(frozen=True)
class JobSnapshot:
    """A consistent copy of a job's state; safe to read from any thread. `history` is shared with
    other snapshots of the same job: read it, never modify it."""

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
    history: tuple[dict[str, Any], ...]
    error: str | None
    started: float | None
    finished: float | None
    kind: str = "thread"  # worker | thread | adopted (a worker found alive by JobManager.watch)
    nproc: int = 1
    pid: int | None = None  # the worker process (its launcher under torchrun); None in-thread
    alive: bool | None = None  # the worker process / job thread still exists
    last_activity: float | None = None  # time.time() of the last metrics record or status change
    mode: str = "train"  # train | shared (one model over `subjects`) | adapt (a new subject, `adapt_from`)
    subjects: tuple[str, ...] = ()  # a shared job's subjects
    adapt_from: Path | None = None  # an adapt job's shared run
    stopping: bool = False  # a stop was requested and the job still runs (restoring, evaluating)
    budget_s: float | None = None  # a training job's time budget (config.max_seconds), None without one

    @property
    def active(self) -> bool:
        return self.state in runs_io.ACTIVE_STATES


@dataclass
class Job:
    """The manager's mutable record of one job (guarded by the manager's lock)."""

    job_id: str
    subject: str
    run_dir: Path
    config: TrainConfig
    data_dir: Path
    runs_dir: Path
    resume: bool
    kind: str = "worker"
    nproc: int = 1
    stop_event: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    done: threading.Event = field(default_factory=threading.Event)
    state: str = "queued"
    message: str = "waiting for a free slot"
    progress: float = 0.0
    epoch: int = 0
    eta_s: float | None = None
    samples_per_s: float | None = None
    history: tuple[dict[str, Any], ...] = ()
    n_steps: int = 0
    error: str | None = None
    started: float | None = None
    finished: float | None = None
    pid: int | None = None
    alive: bool | None = None
    last_activity: float | None = None
    start_ticks: int | None = None  # /proc start time of `pid` (guards against pid reuse)
    metrics_offset: int = 0  # how far metrics.jsonl has been read
    mode: str = "train"  # train | shared | adapt (neuroalign.jobs.shared_job)
    subjects: tuple[str, ...] = ()  # a shared job's subjects
    adapt_from: Path | None = None  # an adapt job's shared run


def apply_records(job: Job, records: list[dict[str, Any]]) -> None:
    """Fold new history records into the job (lock held): a new tuple, so earlier snapshots keep
    theirs unchanged; at most about MAX_STEP_HISTORY step records stay (every epoch record does)."""
    if not records:
        return
    for values in records:
        job.progress = number(values.get("progress"), job.progress)
        job.epoch = int(number(values.get("epoch"), job.epoch))
        job.eta_s = number(values.get("eta_s"), job.eta_s)
        job.samples_per_s = number(values.get("samples_per_s"), job.samples_per_s)
    job.n_steps += sum(1 for r in records if r.get("event") == "step")
    history = job.history + tuple(records)
    if job.n_steps > MAX_STEP_HISTORY + MAX_STEP_HISTORY // 10:  # drop the oldest step records, keep epochs
        drop = job.n_steps - MAX_STEP_HISTORY
        kept = []
        for rec in history:
            if drop and rec.get("event") == "step":
                drop -= 1
                continue
            kept.append(rec)
        history, job.n_steps = tuple(kept), MAX_STEP_HISTORY
    job.history = history
    if not job.stop_event.is_set():  # a stopping job keeps saying so
        job.message = f"epoch {job.epoch}/{job.config.epochs}"
    job.last_activity = time.time()


def snapshot(job: Job) -> JobSnapshot:
    """The job's read-only copy (lock held; O(1): the history tuple is shared)."""
    alive = job.alive
    stopping = job.state == "running" and job.stop_event.is_set()
    if job.kind == "thread" and job.state == "running":
        alive = job.thread is not None and job.thread.is_alive()
    return JobSnapshot(job.job_id, job.subject, job.run_dir, job.state, job.message, job.progress, job.epoch,
                       job.config.epochs if job.mode == "train" else 0, job.eta_s, job.samples_per_s, job.history, job.error, job.started,
                       job.finished, kind=job.kind, nproc=job.nproc, pid=job.pid, alive=alive,
                       last_activity=job.last_activity, mode=job.mode, subjects=job.subjects,
                       adapt_from=job.adapt_from, stopping=stopping,
                       budget_s=job.config.max_seconds if job.mode == "train" else None)
