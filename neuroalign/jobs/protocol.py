"""The worker protocol's files and process facts, shared by the job manager and the worker.

A dashboard job's worker process (`neuroalign.jobs.worker`) and the server's job thread that
follows it talk only through the run folder: the files named here, plus `metrics.jsonl` and
`status.json` (`neuroalign.training.runs`). This module holds what both sides need without
importing either: the file names, the spec version, the server-lifetime switch, whether a process
still runs (guarded against pid reuse; `io_utils.process_alive`), how a process ended in words, the last line of a log and an
incremental reader of `metrics.jsonl`. Nothing here imports torch.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

from neuroalign import settings
from neuroalign.io_utils import json_number as number, process_alive, start_ticks  # noqa: F401  (the protocol's names)

logger = logging.getLogger(__name__)

SPEC_FILE = "job_spec.json"  # the worker's instructions
STOP_FILE = "stop_request.json"  # present = stop requested (polled by every rank)
WORKER_FILE = "worker.json"  # the launched process while it runs: pid, start time, command
WORKER_LOG = "worker.log"  # the worker's stdout and stderr
SPEC_VERSION = 1
# "1": workers keep training when the server that started them exits (the old detached behaviour)
OUTLIVE_SERVER_ENV = "NEUROALIGN_JOBS_OUTLIVE_SERVER"
SERVER_EXITED_MESSAGE = "stopped because the dashboard server exited"

_MAX_READ = 4 << 20  # bytes of metrics.jsonl read per poll
_LOG_PREFIX = re.compile(r"^\S+ \S+ rank\d+ [A-Z]+ [\w.]+: ")  # the worker's log format


def outlive_server() -> bool:
    """Whether $NEUROALIGN_JOBS_OUTLIVE_SERVER asks for workers that outlive their server."""
    return settings.get(OUTLIVE_SERVER_ENV)


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def exit_text(returncode: int | None) -> str:
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


def stat_sig(path: Path) -> tuple[int, int, int] | None:
    """(mtime_ns, size, inode) of a file, None when it cannot be stat'ed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def remove(path: Path) -> None:
    """Remove a file if it is there (a failure is logged, not raised)."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        logger.warning("could not remove %s: %s", path, exc)


def read_json(path: Path) -> Any:
    """The JSON value of a file, None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def recorded_worker(run_dir: Path) -> tuple[int | None, int | None, dict[str, Any]]:
    """(pid, start ticks, whole record) of `run_dir/worker.json`; (None, None, {}) without one."""
    info = read_json(run_dir / WORKER_FILE)
    if not isinstance(info, dict):
        return None, None, {}
    pid, ticks = info.get("pid"), info.get("start_ticks")
    return (pid if isinstance(pid, int) else None), (ticks if isinstance(ticks, int) else None), info


def live_worker(run_dir: Path) -> int | None:
    """The pid of a live worker recorded in `run_dir/worker.json`, else None."""
    pid, ticks, _ = recorded_worker(run_dir)
    return pid if process_alive(pid, ticks) else None


class MetricsTail:
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

    def size(self) -> int:
        """The file's current size (0 when it is missing)."""
        sig = stat_sig(self.path)
        return sig[1] if sig else 0
