"""Background training jobs at process level (what the dashboard drives).

Job model
---------
One `JobManager` per server process (`get_job_manager()`): every browser session sees the same
jobs. A job is a thread of the server that runs one training of one subject, writing its run
folder as it goes; the manager keeps a thread-safe record that pages poll with `snapshots()`.
Jobs never call Streamlit. How the thread trains:

* **Worker process (the default).** The job's thread writes `job_spec.json` into the run folder
  (created by `start`) and starts `python -m neuroalign.training.worker --spec ...` -- with
  `nproc > 1` under `python -m torch.distributed.run --standalone --nproc_per_node=N`, the worker's
  stdout and stderr going to `worker.log` in the run folder. It then follows the run through the
  folder every `poll_s` seconds: new lines of `metrics.jsonl` become the job's in-memory history
  (the live loss curves), `status.json` gives the message and, at the end, the result (with
  `results.json` beside it). A stop is `stop_request.json` in the run folder, polled by every rank
  of the worker, so it is graceful: the trainer ends its step, restores the best checkpoint and
  still evaluates. A worker that ends without a final status of its own (killed by a signal, by
  the out-of-memory killer, a nonzero exit before it could write) gets its run marked `failed`
  with one line: how it ended and the last line of its log. So nothing a training sets
  process-wide (torch's thread count, deterministic algorithms, module switches read from the
  environment) reaches the server, and an out-of-memory error ends the worker, not the server.
* **In-thread** (`JobManager(runner=callable)`): the callable, with `pipeline.run_training`'s
  signature (`resume_training`'s for resumed runs), runs in the job's thread and reports through its
  callback; used by tests and by code that embeds the manager. Only here can a job touch the
  server's process state, so the dashboard never uses it.

Processes per job: `start(..., nproc=None)` -- None is automatic: the number of visible GPUs when
there is more than one (and the config's device is not "cpu"), else 1; the environment variable
`NEUROALIGN_JOB_PROCESSES` replaces the automatic value (e.g. 2 on a CPU machine = 2 gloo
processes, how CI tests the multi-process path). A multi-process job is shown like any other;
only its rank 0 writes the run folder, `pid` is torchrun's launcher (which passes a SIGTERM on to
the ranks), and if the launcher alone dies while rank 0 still trains, rank 0 (the pid in its
status.json) is followed until it ends. `close(kill=True)` stops every job and terminates the
workers that do not end in time.

Scheduling: at most one active (queued or running) job per subject -- starting a second one for
the same subject is a ValueError, also when two sessions start it at the same moment (the check
and the creation of the run folder are one step under the manager's lock). Jobs of different
subjects run in parallel up to `max_parallel` (default 1: one GPU / a few CPU cores are best used
by one run at a time); the rest wait in a FIFO queue with state `queued`.

Restarts: a worker runs in a session of its own, so it outlives the server (a Ctrl-C in the
server's terminal, a restart); while it runs, `worker.json` in its run folder records its pid and
start time. `sync_runs(runs_dir)` adopts a run whose recorded worker is still alive (the job is
followed through its folder with the pid as liveness, shown and stoppable like the others), never
marks it interrupted, and marks runs that claim to be queued/running but have no live job or
process as `interrupted`; `resume(run_dir)` continues such a run from its `last.pt`.

Memory: a job's history is an immutable tuple that every snapshot shares (a snapshot costs
O(1), however long the history; the records must be treated as read-only), with at most about
`MAX_STEP_HISTORY` step records (epoch records are all kept). Ended jobs are pruned: the
`keep_finished` (default 3) most recently ended jobs per subject, and at most `MAX_ENDED_JOBS` in
all, stay in memory; older ones live on as run folders (the Runs page). `get` of a pruned job is
a ValueError; `wait` still returns the job's final snapshot.

Liveness: snapshots carry `last_activity` (when a metrics record or a status change last came in),
`pid` (the worker's launcher) and `alive`, from which the dashboard says that nothing has
progressed for a while and whether the process is still there.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from neuroalign.config import TrainConfig
from neuroalign.io_utils import atomic_write_json, pid_alive
from neuroalign.training import runs as runs_io

logger = logging.getLogger(__name__)

# Files of the worker protocol, in the run folder (neuroalign.training.worker reads the first two).
SPEC_FILE = "job_spec.json"  # the worker's instructions
STOP_FILE = "stop_request.json"  # present = stop requested (polled by every rank)
WORKER_FILE = "worker.json"  # the launched process while it runs: pid, start time, command
WORKER_LOG = "worker.log"  # the worker's stdout and stderr
SPEC_VERSION = 1

MAX_STEP_HISTORY = 5000  # per-step records kept in memory per job (epoch records are all kept)
KEEP_FINISHED_PER_SUBJECT = 3  # ended jobs kept in memory per subject (older: run folders only)
MAX_ENDED_JOBS = 24  # ended jobs kept in memory in all
POLL_S = 0.25  # how often a job thread looks at its worker's run folder
JOB_PROCESSES_ENV = "NEUROALIGN_JOB_PROCESSES"
_FINAL_FROM_WORKER = ("finished", "stopped", "failed")
_DIST_ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK", "ROLE_WORLD_SIZE",
             "GROUP_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
_MAX_READ = 4 << 20  # bytes of metrics.jsonl read per poll
_LOG_PREFIX = re.compile(r"^\S+ \S+ rank\d+ [A-Z]+ [\w.]+: ")  # the worker's log format

Runner = Callable[..., Path]


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
    kind: str = "thread"  # worker | thread | adopted (a worker found alive by sync_runs)
    nproc: int = 1
    pid: int | None = None  # the worker process (its launcher under torchrun); None in-thread
    alive: bool | None = None  # the worker process / job thread still exists
    last_activity: float | None = None  # time.time() of the last metrics record or status change

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


# ---- process and file helpers -------------------------------------------------------------------

def _num(value: Any, default: Any) -> Any:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _start_ticks(pid: int) -> int | None:
    """The start time of process `pid` in clock ticks since boot (Linux /proc), None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace").rsplit(")", 1)[1].split()
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def process_alive(pid: Any, start_ticks: int | None = None) -> bool:
    """Whether process `pid` still runs: it exists, is not a zombie and, when `start_ticks` is
    known, started at that time (so a pid reused after a reboot does not count)."""
    if not pid_alive(pid):
        return False
    try:
        fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace").rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return not Path("/proc/self/stat").exists()  # no /proc at all: trust pid_alive
    except (OSError, IndexError):
        return True
    if fields and fields[0] in ("Z", "X"):
        return False
    if start_ticks is not None and len(fields) > 19:
        try:
            return int(fields[19]) == int(start_ticks)
        except ValueError:
            return True
    return True


def _exit_text(returncode: int | None) -> str:
    """How a process ended, e.g. 'was killed by signal 9 (SIGKILL, e.g. the out-of-memory killer)'."""
    if returncode is None:
        return "ended"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "unknown signal"
        if -returncode == getattr(signal, "SIGKILL", None):
            name += ", e.g. by the system's out-of-memory killer"
        return f"was killed by signal {-returncode} ({name})"
    return f"exited with code {returncode}"


def last_log_line(path: Path, limit: int = 300) -> str | None:
    """The last line with any letters or digits in a log file (its prefix of the worker's log
    format removed), at most `limit` characters; None when there is none."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 16384))
            tail = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    for line in reversed(tail.splitlines()):
        line = _LOG_PREFIX.sub("", line.strip())
        if re.search(r"[A-Za-z0-9]", line):
            return line if len(line) <= limit else line[:limit - 1] + "…"
    return None


def _stat_sig(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        logger.warning("could not remove %s: %s", path, exc)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


class _MetricsTail:
    """New complete lines of an append-only JSONL file since the last read (a torn last line waits
    for its newline; a file that shrank is read again from the start)."""

    def __init__(self, path: Path, offset: int = 0) -> None:
        self.path, self.offset, self._partial = path, offset, b""

    def read(self) -> list[dict[str, Any]]:
        try:
            size = os.stat(self.path).st_size
        except OSError:
            return []
        if size < self.offset:
            self.offset, self._partial = 0, b""
        if size == self.offset:
            return []
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            data = fh.read(min(size - self.offset, _MAX_READ))
        self.offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        if len(self._partial) > (1 << 20):  # a "line" of a megabyte is not a metrics record
            self._partial = b""
        out = []
        for line in lines:
            try:
                obj = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(obj, dict):
                out.append(obj)
        return out


def resolve_nproc(nproc: int | None, config: TrainConfig) -> int:
    """Processes for a job: `nproc`, else $NEUROALIGN_JOB_PROCESSES, else the visible GPUs when
    more than one (and the device is not "cpu"), else 1."""
    if nproc is None:
        raw = os.environ.get(JOB_PROCESSES_ENV, "").strip()
        if raw:
            try:
                nproc = int(raw)
            except ValueError:
                raise ValueError(f"{JOB_PROCESSES_ENV} must be a whole number >= 1, got {raw!r}") from None
            if nproc < 1:
                raise ValueError(f"{JOB_PROCESSES_ENV} must be a whole number >= 1, got {raw!r}")
        elif config.device == "cpu":
            nproc = 1
        else:
            import torch

            count = torch.cuda.device_count()
            nproc = count if count > 1 else 1
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"nproc must be a whole number >= 1 (or None for automatic), got {nproc!r}")
    return nproc


class JobManager:
    """Starts, tracks and stops training jobs; all public methods are thread-safe.

    `runner`: a callable run in the job's thread instead of a worker process (see the module
    docstring). `worker_runner`: "module:function" the worker process calls instead of the pipeline
    (same parameters; for tests and custom pipelines). `python`: the interpreter workers run with.
    """

    def __init__(self, max_parallel: int = 1, runner: Runner | None = None, worker_runner: str | None = None,
                 keep_finished: int = KEEP_FINISHED_PER_SUBJECT, poll_s: float = POLL_S,
                 python: str | None = None) -> None:
        if max_parallel < 1:
            raise ValueError(f"max_parallel must be >= 1, got {max_parallel}")
        if keep_finished < 1:
            raise ValueError(f"keep_finished must be >= 1, got {keep_finished}")
        if worker_runner is not None and (not isinstance(worker_runner, str) or worker_runner.count(":") != 1):
            raise ValueError(f"worker_runner must be 'module:function', got {worker_runner!r}")
        self.max_parallel = max_parallel
        self.keep_finished = keep_finished
        self.poll_s = float(poll_s)
        self._runner = runner
        self._worker_runner = worker_runner
        self._python = python or sys.executable
        self._lock = threading.RLock()
        self._jobs: dict[str, _Job] = {}
        self._queue: deque[str] = deque()
        self._ids = itertools.count(1)

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
        `nproc`: processes of the job (None: automatic, see the module docstring)."""
        config.validate()
        kind, nproc = self._kind_and_nproc(nproc, config)
        if self._runner is None:  # fail fast in the caller's thread on an unknown subject
            from neuroalign.data import SubjectStore

            SubjectStore(data_dir).path(subject)
        with self._lock:
            self._check_free(subject)
            run_dir = runs_io.new_run_dir(runs_dir, subject)
            runs_io.write_status(run_dir, "queued", "waiting for a free slot", epochs=config.epochs)
            return self._add(_Job(f"job-{next(self._ids)}", subject, run_dir, config, Path(data_dir).resolve(),
                                  Path(runs_dir).resolve(), resume=False, kind=kind, nproc=nproc))

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
            live = self._live_worker(Path(run_dir))
            if live is not None:
                raise ValueError(f"run {Path(run_dir).name} is still being trained by process {live}; "
                                 "stop it or wait for it to end")
            runs_io.write_status(run_dir, "queued", "waiting to resume")
            data = Path(data_dir) if data_dir else Path((record.config.get("subject") or {}).get("path", ".")).parent
            return self._add(_Job(f"job-{next(self._ids)}", subject, Path(run_dir), config, data.resolve(),
                                  Path(run_dir).parent, resume=True, kind=kind, nproc=nproc))

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

    @staticmethod
    def _live_worker(run_dir: Path) -> int | None:
        """The pid of a live worker recorded in `run_dir/worker.json`, else None."""
        info = _read_json(run_dir / WORKER_FILE)
        if not isinstance(info, dict):
            return None
        pid, ticks = info.get("pid"), info.get("start_ticks")
        return pid if process_alive(pid, ticks if isinstance(ticks, int) else None) else None

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
            job.last_activity = job.started
            job.thread = threading.Thread(target=self._run, args=(job,), name=f"neuroalign-{job.job_id}", daemon=True)
            job.thread.start()
            running += 1

    # ---- history --------------------------------------------------------------------------
    def _apply_records(self, job: _Job, records: list[dict[str, Any]]) -> None:
        """Fold new history records into the job (caller holds the lock): a new tuple, so earlier
        snapshots keep theirs unchanged."""
        if not records:
            return
        for values in records:
            job.progress = _num(values.get("progress"), job.progress)
            job.epoch = int(_num(values.get("epoch"), job.epoch))
            job.eta_s = _num(values.get("eta_s"), job.eta_s)
            job.samples_per_s = _num(values.get("samples_per_s"), job.samples_per_s)
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

    def _callback(self, job: _Job) -> Callable[[str, dict[str, float]], None]:
        def callback(event: str, values: dict[str, float]) -> None:
            with self._lock:
                self._apply_records(job, [{"event": event, **values}])
        return callback

    # ---- the job thread -------------------------------------------------------------------
    def _run(self, job: _Job) -> None:
        try:
            if job.kind == "thread":
                final = self._run_in_thread(job)
            elif job.kind == "worker":
                final = self._run_worker(job)
            else:
                final = self._follow_adopted(job)
        except Exception as exc:  # the job thread itself must always end its job
            logger.exception("job %s (%s): following it failed", job.job_id, job.subject)
            message = f"{type(exc).__name__}: {exc}"
            final = ("failed", message, message)
            try:
                if runs_io.read_status(job.run_dir).get("state") not in _FINAL_FROM_WORKER:
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

    def _run_in_thread(self, job: _Job) -> tuple[str, str, str | None]:
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

    def _spawn(self, job: _Job) -> subprocess.Popen:
        """Write the spec, clear a stale stop request, start the worker, record its pid."""
        from neuroalign import paths

        run_dir = job.run_dir
        spec = {"version": SPEC_VERSION, "mode": "resume" if job.resume else "start",
                "subject": job.subject, "data_dir": str(job.data_dir), "runs_dir": str(job.runs_dir),
                "run_dir": str(run_dir), "cache_dir": str(paths.cache_dir()), "config": job.config.to_dict(),
                "runner": self._worker_runner}
        spec_path = atomic_write_json(run_dir / SPEC_FILE, spec)
        with self._lock:  # a stop requested before the worker exists must reach it
            if not job.stop_event.is_set():
                _remove(run_dir / STOP_FILE)
        cmd = [self._python, "-m", "neuroalign.training.worker", "--spec", str(spec_path)]
        if job.nproc > 1:
            cmd = [self._python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={job.nproc}",
                   "-m", "neuroalign.training.worker", "--spec", str(spec_path)]
        env = {k: v for k, v in os.environ.items() if k not in _DIST_ENV and not k.startswith("TORCHELASTIC_")}
        env["PYTHONUNBUFFERED"] = "1"
        with open(run_dir / WORKER_LOG, "ab") as log:
            log.write(f"---- {_utc_now()} {' '.join(cmd)}\n".encode())
            log.flush()
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True, close_fds=True)
        ticks = _start_ticks(proc.pid)
        try:
            atomic_write_json(run_dir / WORKER_FILE, {"pid": proc.pid, "start_ticks": ticks, "nproc": job.nproc,
                                                      "command": cmd, "started": _utc_now(),
                                                      "server_pid": os.getpid()})
        except BaseException:  # a worker nobody could find again must not run on
            proc.kill()
            proc.wait()
            raise
        with self._lock:
            job.pid, job.start_ticks, job.alive = proc.pid, ticks, True
        logger.info("job %s (%s): worker pid %d started (%d process%s)", job.job_id, job.subject, proc.pid,
                    job.nproc, "" if job.nproc == 1 else "es")
        return proc

    def _run_worker(self, job: _Job) -> tuple[str, str, str | None]:
        offset = 0
        if job.resume:  # the history of this session only, as an in-thread resume reports it
            try:
                offset = os.stat(job.run_dir / runs_io.METRICS_FILE).st_size
            except OSError:
                offset = 0
        try:
            proc = self._spawn(job)
        except OSError as exc:
            message = f"could not start the training worker: {type(exc).__name__}: {exc}"
            runs_io.write_status(job.run_dir, "failed", message)
            return ("failed", message, message)
        try:
            self._follow(job, lambda: proc.poll() is None, offset)
            # torchrun's launcher gone while its rank 0 still trains (the launcher alone was killed):
            # follow rank 0, whose pid its status.json records, until it ends too
            status = runs_io.read_status(job.run_dir)
            rank0 = status.get("pid")
            if status.get("state") in runs_io.ACTIVE_STATES and rank0 not in (proc.pid, os.getpid()) \
                    and process_alive(rank0):
                logger.warning("job %s: worker launcher %d ended; following rank 0 (pid %s)", job.job_id, proc.pid,
                               rank0)
                self._follow(job, lambda: process_alive(rank0), None)
        finally:
            if proc.poll() is None:  # only when following itself broke: do not leave a worker unwatched
                proc.kill()
                proc.wait()
            _remove(job.run_dir / WORKER_FILE)
        return self._outcome(job, f"(pid {proc.pid}) {_exit_text(proc.returncode)}")

    def _follow_adopted(self, job: _Job) -> tuple[str, str, str | None]:
        pid, ticks = job.pid, job.start_ticks
        self._follow(job, lambda: process_alive(pid, ticks), 0)
        _remove(job.run_dir / WORKER_FILE)
        return self._outcome(job, f"(pid {pid}) ended")

    def _follow(self, job: _Job, alive: Callable[[], bool], offset: int | None = 0) -> None:
        """Mirror the run folder into the job until the process ends, then read it once more
        (`offset`: where in metrics.jsonl to begin; None: where an earlier follow of this job ended)."""
        if offset is None:
            offset = job.metrics_offset
        tail = _MetricsTail(job.run_dir / runs_io.METRICS_FILE, offset)
        status_path = job.run_dir / runs_io.STATUS_FILE
        sig = None
        while True:
            running = alive()
            sig = self._poll(job, tail, status_path, sig, running)
            if not running:
                break
            time.sleep(self.poll_s)
        job.metrics_offset = tail.offset

    def _poll(self, job: _Job, tail: _MetricsTail, status_path: Path, sig: Any, running: bool) -> Any:
        try:
            records = tail.read()
            while not running and tail.offset < (_stat_sig(tail.path) or (0, 0))[1]:
                records += tail.read()  # after the end: everything, not 4 MB per poll
            new_sig = _stat_sig(status_path)
            status = runs_io.read_status(job.run_dir) if new_sig != sig else None
        except (OSError, ValueError) as exc:
            logger.warning("job %s: reading %s failed: %s", job.job_id, job.run_dir, exc)
            return sig
        with self._lock:
            self._apply_records(job, records)
            if status and status.get("state") == "running" and status.get("message") and \
                    not job.stop_event.is_set():
                job.message = str(status["message"])
            if status is not None:
                job.last_activity = time.time()
            job.alive = running
        return new_sig

    def _outcome(self, job: _Job, how: str) -> tuple[str, str, str | None]:
        """The job's end from the run's status; a run without a final status is marked failed."""
        status = runs_io.read_status(job.run_dir)
        state = status.get("state")
        if state in _FINAL_FROM_WORKER:
            message = str(status.get("message", ""))
            return (state, message, message if state == "failed" else None)
        message = f"the training worker {how} before the run ended"
        last = last_log_line(job.run_dir / WORKER_LOG)
        if last:
            message += f"; last log line: {last}"
        message += f" (full log: {WORKER_LOG} in the run folder)"
        runs_io.write_status(job.run_dir, "failed", message)
        logger.warning("job %s (%s): %s", job.job_id, job.subject, message)
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
    def _snapshot(self, job: _Job) -> JobSnapshot:
        alive = job.alive
        if job.kind == "thread" and job.state == "running":
            alive = job.thread is not None and job.thread.is_alive()
        return JobSnapshot(job.job_id, job.subject, job.run_dir, job.state, job.message, job.progress, job.epoch,
                           job.config.epochs, job.eta_s, job.samples_per_s, job.history, job.error, job.started,
                           job.finished, kind=job.kind, nproc=job.nproc, pid=job.pid, alive=alive,
                           last_activity=job.last_activity)

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
                    atomic_write_json(job.run_dir / STOP_FILE, {"requested": _utc_now(), "by_pid": os.getpid()})
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
        worker still running after that is terminated (SIGTERM, then SIGKILL after 10 s)."""
        with self._lock:
            active = [j for j in self._jobs.values() if j.state in runs_io.ACTIVE_STATES]
        for job in active:
            try:
                self.stop(job.job_id)
            except ValueError:
                continue
        for job in active:
            job.done.wait(timeout)
            if kill and not job.done.is_set() and job.pid is not None:
                self._terminate(job)

    def _terminate(self, job: _Job, grace_s: float = 10.0) -> None:
        """SIGTERM to a job's worker (torchrun passes it on to its ranks), SIGKILL if it lingers."""
        for sig in (signal.SIGTERM, getattr(signal, "SIGKILL", signal.SIGTERM)):
            if not process_alive(job.pid, job.start_ticks):
                break
            logger.warning("job %s: sending %s to worker pid %d", job.job_id, sig.name, job.pid)
            try:
                os.kill(job.pid, sig)
            except OSError:
                break
            if job.done.wait(grace_s):
                break

    def live_run_dirs(self) -> list[Path]:
        with self._lock:
            return [j.run_dir for j in self._jobs.values() if j.state in runs_io.ACTIVE_STATES]

    def sync_runs(self, runs_dir: str | Path) -> list[runs_io.RunInfo]:
        """List runs on disk after adopting live workers of this runs folder that no job of this
        process follows (e.g. after a server restart) and marking orphaned queued/running runs as
        interrupted."""
        with self._lock:  # no job can start between reading the live set and marking
            self._adopt_workers(Path(runs_dir))
            runs_io.mark_interrupted(runs_dir, self.live_run_dirs())
        return runs_io.list_runs(runs_dir)

    def _adopt_workers(self, runs_dir: Path) -> None:
        """Follow, as jobs of this manager, the live workers recorded under `runs_dir` (lock held);
        a `worker.json` whose process is gone is removed."""
        if not runs_dir.is_dir():
            return
        for marker in sorted(runs_dir.glob(f"*/{WORKER_FILE}")):
            run_dir = marker.parent
            if self._owner(run_dir) is not None:
                continue
            info = _read_json(marker)
            pid = info.get("pid") if isinstance(info, dict) else None
            ticks = info.get("start_ticks") if isinstance(info, dict) else None
            ticks = ticks if isinstance(ticks, int) else None
            if not process_alive(pid, ticks):
                _remove(marker)  # its process is gone; mark_interrupted judges the status
                continue
            if runs_io.read_status(run_dir).get("state") not in runs_io.ACTIVE_STATES:
                continue  # the worker has written its end and is exiting
            spec = _read_json(run_dir / SPEC_FILE)
            spec = spec if isinstance(spec, dict) else {}
            record_cfg = (_read_json(run_dir / runs_io.CONFIG_FILE) or {})
            try:
                config = TrainConfig.from_dict(spec.get("config") or record_cfg.get("config") or {})
            except (ValueError, TypeError):
                config = TrainConfig()
            subject = spec.get("subject") or (record_cfg.get("subject") or {}).get("name") or run_dir.name
            nproc = info.get("nproc") if isinstance(info.get("nproc"), int) else 1
            job = _Job(f"job-{next(self._ids)}", str(subject), run_dir, config,
                       Path(spec.get("data_dir") or "."), runs_dir, resume=spec.get("mode") == "resume",
                       kind="adopted", nproc=nproc, state="running", message="running (found after a restart)",
                       pid=pid, alive=True, start_ticks=ticks)
            job.started = job.last_activity = time.time()
            self._jobs[job.job_id] = job
            job.thread = threading.Thread(target=self._run, args=(job,), name=f"neuroalign-{job.job_id}",
                                          daemon=True)
            job.thread.start()
            logger.info("adopted the live worker pid %s of run %s as %s", pid, run_dir.name, job.job_id)


_manager: JobManager | None = None
_manager_lock = threading.Lock()


def get_job_manager() -> JobManager:
    """The process-level JobManager (created on first use)."""
    global _manager
    with _manager_lock:
        if _manager is None:
            _manager = JobManager()
        return _manager
