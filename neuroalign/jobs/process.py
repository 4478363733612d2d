"""Launching a job's worker process and following it through its run folder.

`WorkerFollower.run(job)` writes `job_spec.json`, starts `python -m neuroalign.jobs.worker`
(under `torch.distributed.run` when the job has several processes), records it in `worker.json`
and mirrors the run folder into the job every `poll_s` seconds until the process ends: new lines
of `metrics.jsonl` become the job's history, `status.json` its message and, at the end, its
outcome. A process that ends without a final status of its own gets its run marked failed with how
it ended and the last line of its log. `follow_adopted` does the same for a worker this process
did not start (found alive by `JobManager.watch`), `terminate` ends a worker that ignores a stop.
The story (stop, server lifetime, adoption) is in `neuroalign.jobs`.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable

from neuroalign import settings
from neuroalign.config import TrainConfig
from neuroalign.io_utils import atomic_write_json
from neuroalign.jobs import protocol as proto
from neuroalign.jobs.state import Job, apply_records
from neuroalign.training import runs as runs_io

logger = logging.getLogger(__name__)

Outcome = tuple[str, str, str | None]  # (state, message, error)
FINAL_FROM_WORKER = ("finished", "stopped", "failed")
JOB_PROCESSES_ENV = "NEUROALIGN_JOB_PROCESSES"  # replaces the automatic processes per job
_DIST_ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK", "ROLE_WORLD_SIZE",
             "GROUP_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def resolve_nproc(nproc: int | None, config: TrainConfig) -> int:
    """Processes for a job: `nproc`, else $NEUROALIGN_JOB_PROCESSES, else the visible GPUs when
    more than one (and the device is not "cpu"), else 1."""
    if nproc is None:
        nproc = settings.get(JOB_PROCESSES_ENV)
    if nproc is None:
        if config.device == "cpu":
            nproc = 1
        else:
            import torch

            count = torch.cuda.device_count()
            nproc = count if count > 1 else 1
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"nproc must be a whole number >= 1 (or None for automatic), got {nproc!r}")
    return nproc


def worker_command(python: str, spec_path: Path, nproc: int) -> list[str]:
    """The command line of a job's worker (torchrun's launcher when `nproc` > 1)."""
    worker = ["-m", "neuroalign.jobs.worker", "--spec", str(spec_path)]
    if nproc > 1:
        return [python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *worker]
    return [python, *worker]


def worker_env() -> dict[str, str]:
    """The server's environment without the torchrun variables a worker must not inherit."""
    env = {k: v for k, v in os.environ.items() if k not in _DIST_ENV and not k.startswith("TORCHELASTIC_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def server_record() -> dict[str, Any] | None:
    """Which process the worker watches (this one), None when workers are to outlive it."""
    if proto.outlive_server():
        return None
    return {"pid": os.getpid(), "start_ticks": proto.start_ticks(os.getpid())}


class WorkerFollower:
    """Starts and follows the worker processes of one JobManager (whose `lock` guards every job)."""

    def __init__(self, lock: threading.RLock, python: str, worker_runner: str | None, poll_s: float) -> None:
        self.lock, self.python, self.worker_runner, self.poll_s = lock, python, worker_runner, float(poll_s)

    # ---- a worker of this process ---------------------------------------------------------
    def spawn(self, job: Job) -> subprocess.Popen:
        """Write the spec, clear a stale stop request, start the worker, record its pid."""
        from neuroalign import paths

        run_dir = job.run_dir
        spec = {"version": proto.SPEC_VERSION,
                "mode": job.mode if job.mode != "train" else "resume" if job.resume else "start",
                "subject": job.subject, "data_dir": str(job.data_dir), "runs_dir": str(job.runs_dir),
                "run_dir": str(run_dir), "cache_dir": str(paths.cache_dir()), "config": job.config.to_dict(),
                "runner": self.worker_runner, "server": server_record()}
        if job.mode != "train":  # neuroalign.jobs.shared_job
            spec.update({"subjects": list(job.subjects), "runner": None,
                         "adapt_from": str(job.adapt_from) if job.adapt_from else None})
        spec_path = atomic_write_json(run_dir / proto.SPEC_FILE, spec)
        with self.lock:  # a stop requested before the worker exists must reach it
            if not job.stop_event.is_set():
                proto.remove(run_dir / proto.STOP_FILE)
        cmd = worker_command(self.python, spec_path, job.nproc)
        with open(run_dir / proto.WORKER_LOG, "ab") as log:
            log.write(f"---- {proto.utc_now()} {' '.join(cmd)}\n".encode())
            log.flush()
            # a session of its own: a Ctrl-C in the server's terminal does not kill it mid-step; it
            # notices the server's end itself (the spec's "server") and stops gracefully
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    env=worker_env(), start_new_session=True, close_fds=True)
        ticks = proto.start_ticks(proc.pid)
        try:
            atomic_write_json(run_dir / proto.WORKER_FILE, {
                "pid": proc.pid, "start_ticks": ticks, "nproc": job.nproc, "command": cmd,
                "started": proto.utc_now(), "server_pid": os.getpid(), "outlives_server": spec["server"] is None})
        except BaseException:  # a worker nobody could find again must not run on
            proc.kill()
            proc.wait()
            raise
        with self.lock:
            job.pid, job.start_ticks, job.alive = proc.pid, ticks, True
        logger.info("job %s (%s): worker pid %d started (%d process%s)", job.job_id, job.subject, proc.pid,
                    job.nproc, "" if job.nproc == 1 else "es")
        return proc

    def run(self, job: Job) -> Outcome:
        """Start the job's worker and follow it to its end."""
        offset = 0
        if job.resume:  # the history of this session only, as an in-thread resume reports it
            try:
                offset = os.stat(job.run_dir / runs_io.METRICS_FILE).st_size
            except OSError:
                offset = 0
        try:
            proc = self.spawn(job)
        except OSError as exc:
            message = f"could not start the training worker: {type(exc).__name__}: {exc}"
            runs_io.write_status(job.run_dir, "failed", message)
            return ("failed", message, message)
        try:
            self.follow(job, lambda: proc.poll() is None, offset)
            # torchrun's launcher gone while its rank 0 still trains (the launcher alone was killed):
            # follow rank 0, whose pid its status.json records, until it ends too
            status = runs_io.read_status(job.run_dir)
            rank0 = status.get("pid")
            if status.get("state") in runs_io.ACTIVE_STATES and rank0 not in (proc.pid, os.getpid()) \
                    and proto.process_alive(rank0):
                logger.warning("job %s: worker launcher %d ended; following rank 0 (pid %s)", job.job_id, proc.pid,
                               rank0)
                self.follow(job, lambda: proto.process_alive(rank0), None)
        finally:
            if proc.poll() is None:  # only when following itself broke: do not leave a worker unwatched
                proc.kill()
                proc.wait()
            proto.remove(job.run_dir / proto.WORKER_FILE)
        return self.outcome(job, f"(pid {proc.pid}) {proto.exit_text(proc.returncode)}")

    # ---- a worker found alive (adopted) ---------------------------------------------------
    def follow_adopted(self, job: Job) -> Outcome:
        pid, ticks = job.pid, job.start_ticks
        self.follow(job, lambda: proto.process_alive(pid, ticks), 0)
        proto.remove(job.run_dir / proto.WORKER_FILE)
        return self.outcome(job, f"(pid {pid}) ended")

    # ---- following --------------------------------------------------------------------------
    def follow(self, job: Job, alive: Callable[[], bool], offset: int | None = 0) -> None:
        """Mirror the run folder into the job until the process ends, then read it once more
        (`offset`: where in metrics.jsonl to begin; None: where an earlier follow of this job ended)."""
        if offset is None:
            offset = job.metrics_offset
        tail = proto.MetricsTail(job.run_dir / runs_io.METRICS_FILE, offset)
        sig = None
        while True:
            running = alive()
            sig = self._poll(job, tail, sig, running)
            if not running:
                break
            time.sleep(self.poll_s)
        job.metrics_offset = tail.offset

    def _poll(self, job: Job, tail: proto.MetricsTail, sig: Any, running: bool) -> Any:
        try:
            records = tail.read()
            while not running and tail.offset < tail.size():
                records += tail.read()  # after the end: everything, not 4 MB per poll
            new_sig = proto.stat_sig(job.run_dir / runs_io.STATUS_FILE)
            status = runs_io.read_status(job.run_dir) if new_sig != sig else None
        except (OSError, ValueError) as exc:
            logger.warning("job %s: reading %s failed: %s", job.job_id, job.run_dir, exc)
            return sig
        with self.lock:
            apply_records(job, records)
            if status and status.get("state") == "running" and status.get("message") and \
                    not job.stop_event.is_set():
                job.message = str(status["message"])
            if status and job.mode != "train" and isinstance(status.get("progress"), (int, float)):
                job.progress = float(status["progress"])  # a shared fit reports phases, not epochs
            if status is not None:
                job.last_activity = time.time()
            job.alive = running
        return new_sig

    def outcome(self, job: Job, how: str) -> Outcome:
        """The job's end from the run's status; a run without a final status is marked failed."""
        status = runs_io.read_status(job.run_dir)
        state = status.get("state")
        if state in FINAL_FROM_WORKER:
            message = str(status.get("message", ""))
            return (state, message, message if state == "failed" else None)
        message = f"the training worker {how} before the run ended"
        last = proto.last_log_line(job.run_dir / proto.WORKER_LOG)
        if last:
            message += f"; last log line: {last}"
        message += f" (full log: {proto.WORKER_LOG} in the run folder)"
        runs_io.write_status(job.run_dir, "failed", message)
        logger.warning("job %s (%s): %s", job.job_id, job.subject, message)
        return ("failed", message, message)

    # ---- ending -------------------------------------------------------------------------------
    @staticmethod
    def request_stop(job: Job) -> None:
        """A graceful stop through the run folder (every rank polls for the file)."""
        atomic_write_json(job.run_dir / proto.STOP_FILE, {"requested": proto.utc_now(), "by_pid": os.getpid()})

    @staticmethod
    def terminate(job: Job, grace_s: float = 10.0) -> None:
        """SIGTERM to a job's worker (torchrun passes it on to its ranks), SIGKILL if it lingers."""
        for sig in (signal.SIGTERM, getattr(signal, "SIGKILL", signal.SIGTERM)):
            if not proto.process_alive(job.pid, job.start_ticks):
                break
            logger.warning("job %s: sending %s to worker pid %d", job.job_id, sig.name, job.pid)
            try:
                os.kill(job.pid, sig)
            except OSError:
                break
            if job.done.wait(grace_s):
                break
