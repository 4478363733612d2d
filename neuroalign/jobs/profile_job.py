"""The alignment profile as a background job of the dashboard: one worker process per profile,
followed through a small job folder kept with the subject.

    <subject>/.profile-job/job_spec.json      the worker's instructions (written here)
    <subject>/.profile-job/status.json        state, message, layers done / total (written by both sides)
    <subject>/.profile-job/worker.json        the worker's pid and start time (written here)
    <subject>/.profile-job/worker.log         the worker's stdout and stderr
    <subject>/.profile-job/stop_request.json  present = stop after the current layer

`ProfileJobs.start(subject, data_dir, ...)` writes the spec and starts
`python -m neuroalign.jobs.profile_worker --spec ...` (`profile_worker`: it calls
`training.profile.alignment_profile` and keeps the result with the subject, `save_profile`); a thread
of the server waits for the process and, when it ends without a final status of its own (killed, out
of memory), marks the job failed with how it ended and the last line of its log. Everything a page
shows comes from the folder (`status`), so a reloaded page, another browser tab or a restarted server
sees the same job; a folder that says "running" while no process runs and no thread of this server
follows it reads as `interrupted`. Stop = `stop_request.json` (the worker ends after the layer it is
on; the rows so far are kept). The worker stops by itself once the server that started it is gone,
as a training worker does (`process.server_record`).

It is the training jobs' worker-process isolation without their queue: a profile only reads the
subject and the feature cache, never a run folder, so it does not appear on the Train or Runs
pages; one profile per subject at a time. Nothing here imports torch or streamlit.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from neuroalign.io_utils import atomic_write_json
from neuroalign.jobs import protocol as proto

logger = logging.getLogger(__name__)

JOB_DIR = ".profile-job"
STATUS_FILE = "status.json"
SPEC_VERSION = 1
LAYER_CHOICES = ("stages", "all")
RUNNING = "running"
FINAL_STATES = ("finished", "stopped", "failed")
INTERRUPTED = "interrupted"


def job_dir(subject_dir: str | Path) -> Path:
    return Path(subject_dir) / JOB_DIR


def n_layers(models: Sequence[str] | None, layers: str) -> int | None:
    """How many layers a profile of `models` (None: every registered one) scores; None when a
    user's own model (package.module:factory) is among them (its depth is known only once built)."""
    from neuroalign.config import IMAGE_MODEL_DEPTHS

    names = list(IMAGE_MODEL_DEPTHS) if not models else list(models)
    if any(n not in IMAGE_MODEL_DEPTHS for n in names):
        return None
    return sum(len(IMAGE_MODEL_DEPTHS[n]) if layers == "stages" else sum(IMAGE_MODEL_DEPTHS[n]) for n in names)


def check_request(models: Sequence[str] | None, layers: str, max_seconds: float | None) -> None:
    """One-line ValueError for a request the worker would refuse."""
    from neuroalign.config import IMAGE_MODEL_DEPTHS, is_plugin_model

    if layers not in LAYER_CHOICES:
        raise ValueError(f"layers must be one of {', '.join(LAYER_CHOICES)}, got {layers!r}")
    if models is not None:
        if not list(models):
            raise ValueError("pick at least one image model to profile")
        unknown = [m for m in models if m not in IMAGE_MODEL_DEPTHS and not is_plugin_model(m)]
        if unknown:
            raise ValueError(f"unknown image model {unknown[0]!r}; expected one of {', '.join(IMAGE_MODEL_DEPTHS)} "
                             "or package.module:factory")
    if max_seconds is not None and not (isinstance(max_seconds, (int, float)) and max_seconds > 0):
        raise ValueError(f"the time budget must be > 0 seconds, got {max_seconds!r}")


def write_status(folder: Path, state: str, message: str, **fields: Any) -> dict[str, Any]:
    """Replace status.json, keeping the fields not given (started, total, models, ...)."""
    old = proto.read_json(folder / STATUS_FILE)
    status = {**(old if isinstance(old, dict) else {}), **fields, "state": state, "message": message,
              "updated": time.time()}
    if state in FINAL_STATES and "finished" not in fields:
        status["finished"] = time.time()
    atomic_write_json(folder / STATUS_FILE, status)
    return status


@dataclass(frozen=True)
class ProfileJobStatus:
    """What the page shows about a subject's profile job (read from its folder)."""

    subject: str
    state: str  # running | finished | stopped | failed | interrupted
    message: str
    done: int  # layers scored so far
    total: int | None  # layers in all (None: not known yet)
    started: float | None
    finished: float | None
    max_seconds: float | None
    models: tuple[str, ...] | None
    layers: str
    pid: int | None
    stopping: bool  # a stop was requested and the worker is still on its layer

    @property
    def active(self) -> bool:
        return self.state == RUNNING

    @property
    def progress(self) -> float:
        return min(max(self.done / self.total, 0.0), 1.0) if self.total else 0.0

    @property
    def elapsed_s(self) -> float | None:
        if self.started is None:
            return None
        return max(0.0, (self.finished if self.finished and not self.active else time.time()) - self.started)

    @property
    def eta_s(self) -> float | None:
        """Seconds left: the time per layer so far times the layers left, capped by the budget."""
        elapsed = self.elapsed_s
        if not self.active or elapsed is None or not self.total or self.done < 1:
            return None
        eta = elapsed / self.done * (self.total - self.done)
        if self.max_seconds is not None:
            eta = min(eta, max(0.0, self.max_seconds - elapsed))
        return eta


def read_status(subject_dir: str | Path, subject: str = "", followed: bool = False) -> ProfileJobStatus | None:
    """The job of `subject_dir` from its folder, None when it never had one. `followed`: a thread of
    this process follows the worker (else a "running" folder without a live worker is interrupted)."""
    folder = job_dir(subject_dir)
    raw = proto.read_json(folder / STATUS_FILE)
    if not isinstance(raw, dict) or not isinstance(raw.get("state"), str):
        return None
    state, message = raw["state"], str(raw.get("message") or "")
    pid, ticks, _ = proto.recorded_worker(folder)
    if state == RUNNING and not followed and not proto.process_alive(pid, ticks):
        state = INTERRUPTED
        message = ("the profile worker is gone without a result (the dashboard server restarted or the process "
                   "was killed); run the profile again")
    models = raw.get("models")
    total = raw.get("total")
    return ProfileJobStatus(
        subject=subject or str(raw.get("subject") or Path(subject_dir).name), state=state, message=message,
        done=int(proto.number(raw.get("done")) or 0), total=int(total) if proto.number(total) else None,
        started=proto.number(raw.get("started")), finished=proto.number(raw.get("finished")), max_seconds=proto.number(raw.get("max_seconds")),
        models=tuple(str(m) for m in models) if isinstance(models, list) else None,
        layers=str(raw.get("layers") or "stages"), pid=pid,
        stopping=state == RUNNING and (folder / proto.STOP_FILE).exists())


class ProfileJobs:
    """Starts and follows profile workers (one per subject at a time); thread-safe."""

    def __init__(self, python: str | None = None) -> None:
        self.python = python or sys.executable
        self._lock = threading.RLock()
        self._procs: dict[str, subprocess.Popen] = {}  # subject folder -> its worker, while followed
        self._done: dict[str, threading.Event] = {}

    def _key(self, subject_dir: str | Path) -> str:
        return str(Path(subject_dir).resolve())

    def following(self, subject_dir: str | Path) -> bool:
        with self._lock:
            return self._key(subject_dir) in self._procs

    def status(self, subject_dir: str | Path, subject: str = "") -> ProfileJobStatus | None:
        return read_status(subject_dir, subject, followed=self.following(subject_dir))

    def start(self, subject: str, data_dir: str | Path, models: Sequence[str] | None = None, layers: str = "stages",
              max_seconds: float | None = None, cache_dir: str | Path | None = None) -> ProfileJobStatus:
        """Start a profile of `subject` in a worker process; ValueError (one line) when the request is
        invalid, the subject unknown or a profile of it is already running."""
        from neuroalign import paths
        from neuroalign.data.store import SubjectStore
        from neuroalign.jobs.process import server_record, worker_env

        check_request(models, layers, max_seconds)
        store = SubjectStore(data_dir)
        if not store.exists(subject):
            raise ValueError(f"no subject {subject!r} in {store.root}")
        subject_dir = store.path(subject)
        folder = job_dir(subject_dir)
        key = self._key(subject_dir)
        with self._lock:
            current = self.status(subject_dir, subject)
            if current is not None and current.active:
                raise ValueError(f"a profile of {subject} is already running ({current.message}); stop it or wait "
                                 "for it to end")
            folder.mkdir(exist_ok=True)
            proto.remove(folder / proto.STOP_FILE)
            proto.remove(folder / proto.WORKER_FILE)
            total = n_layers(models, layers)
            atomic_write_json(folder / STATUS_FILE, {
                "state": RUNNING, "message": "starting the profile worker", "subject": subject, "done": 0,
                "total": total, "started": time.time(), "updated": time.time(), "max_seconds": max_seconds,
                "models": None if models is None else list(models), "layers": layers})
            spec = {"version": SPEC_VERSION, "subject": subject, "data_dir": str(Path(data_dir).resolve()),
                    "subject_dir": str(subject_dir), "cache_dir": str(paths.cache_dir(cache_dir)),
                    "models": None if models is None else list(models), "layers": layers,
                    "max_seconds": max_seconds, "server": server_record()}
            spec_path = atomic_write_json(folder / "job_spec.json", spec)
            cmd = [self.python, "-m", "neuroalign.jobs.profile_worker", "--spec", str(spec_path)]
            try:
                with open(folder / proto.WORKER_LOG, "ab") as log:
                    log.write(f"---- {proto.utc_now()} {' '.join(cmd)}\n".encode())
                    log.flush()
                    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                            env=worker_env(), start_new_session=True, close_fds=True)
            except OSError as exc:
                message = f"could not start the profile worker: {type(exc).__name__}: {exc}"
                write_status(folder, "failed", message)
                raise ValueError(message) from None
            atomic_write_json(folder / proto.WORKER_FILE, {"pid": proc.pid, "start_ticks": proto.start_ticks(proc.pid),
                                                           "command": cmd, "started": proto.utc_now()})
            self._procs[key] = proc
            self._done[key] = threading.Event()
            threading.Thread(target=self._follow, args=(key, folder, proc), name=f"neuroalign-profile-{subject}",
                             daemon=True).start()
            logger.info("profile of %s: worker pid %d started", subject, proc.pid)
        return self.status(subject_dir, subject)

    def _follow(self, key: str, folder: Path, proc: subprocess.Popen) -> None:
        """Wait for the worker; a worker that ended without a final status gets one (failed)."""
        try:
            code = proc.wait()
            raw = proto.read_json(folder / STATUS_FILE)
            if not (isinstance(raw, dict) and raw.get("state") in FINAL_STATES):
                message = f"the profile worker {proto.exit_text(code)} before the profile ended"
                last = proto.last_log_line(folder / proto.WORKER_LOG)
                if last:
                    message += f"; last log line: {last}"
                write_status(folder, "failed", message + f" (full log: {folder / proto.WORKER_LOG})")
                logger.warning("profile worker %d: %s", proc.pid, message)
        except Exception:  # noqa: BLE001 - the follower must always end its job
            logger.exception("following the profile worker %d failed", proc.pid)
        finally:
            proto.remove(folder / proto.WORKER_FILE)
            with self._lock:
                self._procs.pop(key, None)
                done = self._done.pop(key, None)
            if done is not None:
                done.set()

    def stop(self, subject_dir: str | Path) -> None:
        """Ask the subject's running profile to stop after its current layer (the rows so far are kept)."""
        folder = job_dir(subject_dir)
        status = self.status(subject_dir)
        if status is None or not status.active:
            raise ValueError(f"no profile of {Path(subject_dir).name} is running")
        atomic_write_json(folder / proto.STOP_FILE, {"requested": proto.utc_now(), "by_pid": os.getpid()})

    def wait(self, subject_dir: str | Path, timeout: float | None = None) -> ProfileJobStatus | None:
        """Block until this process's worker of `subject_dir` has ended (or `timeout`); its status."""
        with self._lock:
            done = self._done.get(self._key(subject_dir))
        if done is not None:
            done.wait(timeout)
        return self.status(subject_dir)

    def close(self, timeout: float = 30.0, kill: bool = False) -> None:
        """Stop every followed worker and wait for it; with `kill`, terminate one that lingers."""
        with self._lock:
            procs = dict(self._procs)
        for key in procs:
            try:
                atomic_write_json(job_dir(key) / proto.STOP_FILE, {"requested": proto.utc_now(), "by_pid": os.getpid()})
            except OSError:
                pass
        for key, proc in procs.items():
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                if kill:
                    proc.kill()
                    proc.wait()
            with self._lock:
                done = self._done.get(key)
            if done is not None:
                done.wait(5.0)


_jobs: ProfileJobs | None = None
_jobs_lock = threading.Lock()


def get_profile_jobs() -> ProfileJobs:
    """The process-level ProfileJobs (shared by every browser session)."""
    global _jobs
    with _jobs_lock:
        if _jobs is None:
            _jobs = ProfileJobs()
        return _jobs
