"""`JobManager`: queue, slots, the public API (start, start_shared, start_adapt, resume, stop, wait,
snapshots, watch, close) and `get_job_manager()`, the process-level one. How a job works --
worker process, run folder, stop, server lifetime, adoption -- is told once, in
`neuroalign.jobs` (the package docstring).

Here: `start(..., nproc=None)` picks the processes of a job (None: the visible GPUs when there is
more than one and the config's device is not "cpu", else 1; $NEUROALIGN_JOB_PROCESSES replaces
that); a second active job for the same subject is a ValueError, also when two sessions start it
at the same moment (the check and the run folder are one step under the manager's lock); ended
jobs beyond `keep_finished` per subject and `MAX_ENDED_JOBS` in all are forgotten (`get` of one
is a ValueError, `wait` still returns its final snapshot); `close(kill=True)` stops every job and
terminates workers that do not end in time.
"""

from __future__ import annotations

import itertools
import logging
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Callable

from neuroalign.config import TrainConfig
from neuroalign.jobs import adopt
from neuroalign.jobs.process import (FINAL_FROM_WORKER, JOB_PROCESSES_ENV, Outcome, WorkerFollower,
                                     resolve_nproc)
from neuroalign.jobs.protocol import (OUTLIVE_SERVER_ENV, SPEC_FILE, SPEC_VERSION, STOP_FILE, WORKER_FILE,
                                      WORKER_LOG, last_log_line, live_worker, process_alive)
from neuroalign.jobs.state import Job, JobSnapshot, apply_records, snapshot
from neuroalign.training import runs as runs_io

__all__ = ["JOB_PROCESSES_ENV", "JobManager", "JobSnapshot", "OUTLIVE_SERVER_ENV", "SPEC_FILE", "SPEC_VERSION",
           "STOP_FILE", "WORKER_FILE", "WORKER_LOG", "get_job_manager", "last_log_line", "process_alive",
           "resolve_nproc"]

logger = logging.getLogger(__name__)

KEEP_FINISHED_PER_SUBJECT = 3  # ended jobs kept in memory per subject (older: run folders only)
MAX_ENDED_JOBS = 24  # ended jobs kept in memory in all
POLL_S = 0.25  # how often a job thread looks at its worker's run folder
SYNC_S = 3.0  # how often the manager re-syncs a watched runs folder (adoption, interrupted marking)

Runner = Callable[..., Path]


class JobManager:
    """Starts, tracks and stops training jobs; all public methods are thread-safe.

    `runner`: a callable run in the job's thread instead of a worker process (see the module
    docstring). `worker_runner`: "module:function" the worker process calls instead of the pipeline
    (same parameters; for tests and custom pipelines). `python`: the interpreter workers run with.
    """

    def __init__(self, max_parallel: int = 1, runner: Runner | None = None, worker_runner: str | None = None,
                 keep_finished: int = KEEP_FINISHED_PER_SUBJECT, poll_s: float = POLL_S,
                 python: str | None = None, sync_s: float | None = None) -> None:
        if max_parallel < 1:
            raise ValueError(f"max_parallel must be >= 1, got {max_parallel}")
        if keep_finished < 1:
            raise ValueError(f"keep_finished must be >= 1, got {keep_finished}")
        if worker_runner is not None and (not isinstance(worker_runner, str) or worker_runner.count(":") != 1):
            raise ValueError(f"worker_runner must be 'module:function', got {worker_runner!r}")
        self.max_parallel = max_parallel
        self.keep_finished = keep_finished
        self._runner = runner
        self._lock = threading.RLock()
        self._workers = WorkerFollower(self._lock, python or sys.executable, worker_runner, poll_s)
        self._jobs: dict[str, Job] = {}
        self._queue: deque[str] = deque()
        self._ids = itertools.count(1)
        self.sync_s = SYNC_S if sync_s is None else sync_s
        self._watched: set[Path] = set()
        self._watcher: threading.Thread | None = None
        self._closing = threading.Event()

    @property
    def poll_s(self) -> float:
        """How often a job thread looks at its worker's run folder (seconds)."""
        return self._workers.poll_s

    def _start_thread(self, job: Job) -> None:
        job.thread = threading.Thread(target=self._run, args=(job,), name=f"neuroalign-{job.job_id}", daemon=True)
        job.thread.start()

    # ---- starting -------------------------------------------------------------------------
    def _kind_and_nproc(self, nproc: int | None, config: TrainConfig) -> tuple[str, int]:
        if self._runner is not None:
            if nproc is not None and nproc != 1:
                raise ValueError(f"nproc={nproc} needs worker processes, but this JobManager runs jobs in-thread "
                                 "(runner=...)")
            return "thread", 1
        return "worker", resolve_nproc(nproc, config)

    def start(self, subject: str, config: TrainConfig, data_dir: str | Path, runs_dir: str | Path,
              nproc: int | None = None) -> str:
        """Queue a training job for `subject`; returns its job id. ValueError if one is active.
        `nproc`: processes of the job (None: automatic, see the module docstring). `config` comes
        validated from the form (`ui.train_form.config_from_values`); the worker validates the spec's."""
        kind, nproc = self._kind_and_nproc(nproc, config)
        if self._runner is None:  # fail fast in the caller's thread on an unknown subject
            from neuroalign.data import SubjectStore

            SubjectStore(data_dir).path(subject)
        with self._lock:
            self._check_free(subject)
            run_dir = runs_io.new_run_dir(runs_dir, subject)
            runs_io.write_status(run_dir, "queued", "waiting for a free slot", epochs=config.epochs)
            return self._add(Job(f"job-{next(self._ids)}", subject, run_dir, config, Path(data_dir).resolve(),
                                 Path(runs_dir).resolve(), resume=False, kind=kind, nproc=nproc))

    def start_shared(self, subjects: list[str], config: TrainConfig, data_dir: str | Path,
                     runs_dir: str | Path) -> str:
        """Queue one shared model over `subjects` (`neuroalign.jobs.shared_job`); returns its job id.
        One-line ValueError, before any run folder is made, for what the library would refuse."""
        from neuroalign.jobs import shared_job
        from neuroalign.training.shared_runs import shared_run_label

        config.validate()
        self._need_workers("a shared model")
        names = shared_job.check_shared(subjects, data_dir)
        label = "+".join(names)
        with self._lock:
            self._check_free(label)
            run_dir = runs_io.new_run_dir(runs_dir, shared_run_label(names))
            runs_io.write_status(run_dir, "queued", "waiting for a free slot")
            return self._add(Job(f"job-{next(self._ids)}", label, run_dir, config, Path(data_dir).resolve(),
                                 Path(runs_dir).resolve(), resume=False, kind="worker", nproc=1, mode="shared",
                                 subjects=tuple(names)))

    def start_adapt(self, from_dir: str | Path, subject: str, data_dir: str | Path, runs_dir: str | Path) -> str:
        """Queue the adaptation of the new `subject` to the shared run `from_dir` (only its read-in is
        fitted); returns its job id. One-line ValueError, before any run folder is made, when it cannot."""
        from neuroalign.jobs import shared_job

        self._need_workers("an adaptation")
        from_dir = shared_job.check_adapt(from_dir, subject, data_dir)
        config = runs_io.load_run(from_dir).train_config()
        with self._lock:
            self._check_free(subject)
            run_dir = runs_io.new_run_dir(runs_dir, f"adapt-{subject}")
            runs_io.write_status(run_dir, "queued", "waiting for a free slot")
            return self._add(Job(f"job-{next(self._ids)}", subject, run_dir, config, Path(data_dir).resolve(),
                                 Path(runs_dir).resolve(), resume=False, kind="worker", nproc=1, mode="adapt",
                                 subjects=(subject,), adapt_from=from_dir.resolve()))

    def _need_workers(self, what: str) -> None:
        if self._runner is not None:
            raise ValueError(f"{what} runs in a worker process, but this JobManager runs jobs in-thread (runner=...)")

    def resume(self, run_dir: str | Path, data_dir: str | Path | None = None, nproc: int | None = None) -> str:
        """Continue an interrupted/stopped run from its `last.pt` in the same folder."""
        record = runs_io.load_run(run_dir)
        subject = (record.config.get("subject") or {}).get("name")
        if not subject:
            raise ValueError(f"{run_dir} has no config.json with a subject; cannot resume")
        if not (Path(run_dir) / runs_io.LAST_CKPT).is_file():
            raise FileNotFoundError(f"{Path(run_dir) / runs_io.LAST_CKPT} not found; nothing to resume from")
        config = record.train_config()
        kind, nproc = self._kind_and_nproc(nproc, config)
        with self._lock:
            self._check_free(subject)
            if record.status.get("state") in runs_io.ACTIVE_STATES and self._owner(Path(run_dir)) is not None:
                raise ValueError(f"run {Path(run_dir).name} is already active")
            live = live_worker(Path(run_dir))
            if live is not None:
                raise ValueError(f"run {Path(run_dir).name} is still being trained by process {live}; "
                                 "stop it or wait for it to end")
            runs_io.check_unlocked(run_dir)  # e.g. a `train --resume` from a terminal
            runs_io.write_status(run_dir, "queued", "waiting to resume")
            data = Path(data_dir) if data_dir else Path((record.config.get("subject") or {}).get("path", ".")).parent
            return self._add(Job(f"job-{next(self._ids)}", subject, Path(run_dir), config, data.resolve(),
                                 Path(run_dir).parent, resume=True, kind=kind, nproc=nproc))

    def _check_free(self, subject: str) -> None:
        for job in self._jobs.values():
            if job.subject == subject and job.state in runs_io.ACTIVE_STATES:
                raise ValueError(f"subject {subject!r} already has an active job ({job.job_id}, {job.state}); "
                                 "stop it or wait for it to finish")

    def _owner(self, run_dir: Path) -> Job | None:
        for job in self._jobs.values():
            if job.run_dir.resolve() == run_dir.resolve() and job.state in runs_io.ACTIVE_STATES:
                return job
        return None

    def _add(self, job: Job) -> str:
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
            job.last_activity = job.started
            self._start_thread(job)
            running += 1

    # ---- history --------------------------------------------------------------------------
    def _callback(self, job: Job) -> Callable[[str, dict[str, float]], None]:
        def callback(event: str, values: dict[str, float]) -> None:
            with self._lock:
                apply_records(job, [{"event": event, **values}])
        return callback

    # ---- the job thread -------------------------------------------------------------------
    def _run(self, job: Job) -> None:
        try:
            if job.kind == "thread":
                final = self._run_in_thread(job)
            elif job.kind == "worker":
                final = self._workers.run(job)
            else:
                final = self._workers.follow_adopted(job)
        except Exception as exc:  # the job thread itself must always end its job
            logger.exception("job %s (%s): following it failed", job.job_id, job.subject)
            message = f"{type(exc).__name__}: {exc}"
            final = ("failed", message, message)
            try:
                if runs_io.read_status(job.run_dir).get("state") not in FINAL_FROM_WORKER:
                    runs_io.write_status(job.run_dir, "failed", message)
            except (OSError, ValueError):
                logger.exception("job %s: could not write its failed status", job.job_id)
        with self._lock:
            job.state, job.message, job.error = final
            if job.state == "finished":
                job.progress = 1.0
            job.finished = time.time()
            job.alive = False
            job.done.set()
            self._prune()
            self._schedule()

    def _run_in_thread(self, job: Job) -> Outcome:
        try:
            if job.resume:
                self._runner(job.run_dir, data_dir=job.data_dir, callback=self._callback(job),
                             stop_event=job.stop_event)
            else:
                self._runner(job.subject, job.config, job.data_dir, job.runs_dir, callback=self._callback(job),
                             stop_event=job.stop_event, run_dir=job.run_dir)
            status = runs_io.read_status(job.run_dir)
            state = status.get("state", "finished")
            if state in runs_io.ACTIVE_STATES:  # a runner that did not write a final status
                state = "stopped" if job.stop_event.is_set() else "finished"
            return (state, status.get("message", ""), None)
        except Exception as exc:  # a job must never take the server down; the message is shown
            logger.exception("job %s (%s) failed", job.job_id, job.subject)
            message = f"{type(exc).__name__}: {exc}"
            if runs_io.read_status(job.run_dir).get("state") != "failed":
                runs_io.write_status(job.run_dir, "failed", message)
            return ("failed", message, message)

    def _prune(self) -> None:
        """Forget ended jobs beyond `keep_finished` per subject and MAX_ENDED_JOBS in all (lock held)."""
        ended = sorted((j for j in self._jobs.values() if j.done.is_set()), key=lambda j: j.finished or 0.0,
                       reverse=True)
        per_subject: dict[str, int] = {}
        kept = 0
        for job in ended:
            n = per_subject.get(job.subject, 0)
            if n >= self.keep_finished or kept >= MAX_ENDED_JOBS:
                del self._jobs[job.job_id]
                continue
            per_subject[job.subject] = n + 1
            kept += 1

    # ---- queries and control --------------------------------------------------------------
    def _snapshot(self, job: Job) -> JobSnapshot:
        return snapshot(job)

    def get(self, job_id: str) -> JobSnapshot:
        with self._lock:
            if job_id not in self._jobs:
                raise ValueError(f"unknown job {job_id!r} (ended jobs are kept only for the {self.keep_finished} "
                                 f"most recent per subject; older ones are run folders); "
                                 f"known: {', '.join(self._jobs) or 'none'}")
            return self._snapshot(self._jobs[job_id])

    def snapshots(self) -> list[JobSnapshot]:
        """All jobs of this process, newest first (cheap: no copy of any history)."""
        with self._lock:
            return [self._snapshot(j) for j in reversed(list(self._jobs.values()))]

    def active_for(self, subject: str) -> JobSnapshot | None:
        with self._lock:
            for job in self._jobs.values():
                if job.subject == subject and job.state in runs_io.ACTIVE_STATES:
                    return self._snapshot(job)
        return None

    def stop(self, job_id: str) -> JobSnapshot:
        """Ask a job to stop: a queued job is cancelled at once, a running one stops after its step
        (a worker through `stop_request.json` in its run folder)."""
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
                self._prune()
                return self._snapshot(job)
            if job.state == "running":
                if job.kind != "thread":
                    self._workers.request_stop(job)
                job.message = "stopping: restoring the best checkpoint and evaluating"
            return self._snapshot(job)

    def wait(self, job_id: str, timeout: float | None = None) -> JobSnapshot:
        """Block until the job ends (or `timeout` seconds pass); returns its snapshot (also when the
        job was pruned from memory meanwhile)."""
        with self._lock:
            if job_id not in self._jobs:
                raise ValueError(f"unknown job {job_id!r}")
            job = self._jobs[job_id]
        job.done.wait(timeout)
        with self._lock:
            return self._snapshot(job)

    def close(self, timeout: float | None = 60, kill: bool = False) -> None:
        """Stop every active job and wait for them (up to `timeout` seconds each); with `kill`, a
        worker still running after that is terminated (SIGTERM, then SIGKILL after 10 s). The watcher
        of `watch` ends too (a later `watch` starts it again)."""
        with self._lock:
            self._closing.set()
            self._watcher = None
            active = [j for j in self._jobs.values() if j.state in runs_io.ACTIVE_STATES]
        for job in active:
            try:
                self.stop(job.job_id)
            except ValueError:
                continue
        for job in active:
            job.done.wait(timeout)
            if kill and not job.done.is_set() and job.pid is not None:
                self._workers.terminate(job)

    def live_run_dirs(self) -> list[Path]:
        with self._lock:
            return [j.run_dir for j in self._jobs.values() if j.state in runs_io.ACTIVE_STATES]

    def sync_runs(self, runs_dir: str | Path) -> list[runs_io.RunInfo]:
        """List runs on disk after syncing `runs_dir` once (see `watch`)."""
        self._sync(Path(runs_dir))
        return runs_io.list_runs(runs_dir)

    def watch(self, runs_dir: str | Path) -> None:
        """Keep `runs_dir` in sync with this manager: the first call for a folder adopts its live
        workers that no job of this process follows (e.g. after a server restart) and marks its
        orphaned queued/running runs `interrupted`, at once; then the manager's watcher thread does
        so every `sync_s` seconds until `close`. Later calls for the same folder are free, so a
        caller may call this before every read of the folder (the reads themselves never write)."""
        root = Path(runs_dir).resolve()
        with self._lock:
            known = root in self._watched
            self._watched.add(root)
            if self._watcher is None:
                self._closing = threading.Event()  # one per watcher thread: `close` ends this one
                self._watcher = threading.Thread(target=self._watch_loop, args=(self._closing,),
                                                 name="neuroalign-runs-watcher", daemon=True)
                self._watcher.start()
        if not known:
            self._sync(root)

    def _watch_loop(self, closing: threading.Event) -> None:
        while not closing.wait(self.sync_s):
            with self._lock:
                roots = sorted(self._watched)
            for root in roots:
                try:
                    self._sync(root)
                except Exception:  # noqa: BLE001 - the watcher outlives one unreadable folder
                    logger.exception("syncing the runs folder %s failed", root)

    def _sync(self, runs_dir: Path) -> None:
        with self._lock:  # no job can start between reading the live set and marking
            self._adopt_workers(runs_dir)
            runs_io.mark_interrupted(runs_dir, self.live_run_dirs())

    def _adopt_workers(self, runs_dir: Path) -> None:
        """Follow, as jobs of this manager, the live workers recorded under `runs_dir` (lock held)."""
        for job in adopt.live_workers(runs_dir, lambda d: self._owner(d) is not None,
                                          lambda: f"job-{next(self._ids)}"):
            self._jobs[job.job_id] = job
            self._start_thread(job)


_manager: JobManager | None = None
_manager_lock = threading.Lock()


def get_job_manager() -> JobManager:
    """The process-level JobManager (created on first use)."""
    global _manager
    with _manager_lock:
        if _manager is None:
            _manager = JobManager()
        return _manager
