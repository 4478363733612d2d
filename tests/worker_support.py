"""Faults injected into the sandboxed import worker (`neuroalign.data.check_worker`): since the import
service parses and writes an import in that child process (`neuroalign.data.imports`), a test that
fills the disk or breaks a write does so there, with `in_worker(monkeypatch, setup)` -- `setup` is
Python run in the worker before its `main()`."""

from __future__ import annotations

import textwrap

WORKER_MAIN = "from neuroalign.data import check_worker\nraise SystemExit(check_worker.main())\n"


def in_worker(monkeypatch, setup: str) -> None:
    """Start every worker as `python -c "<setup>; check_worker.main()"`."""
    from neuroalign.data import sandbox

    monkeypatch.setattr(sandbox, "WORKER_ARGS", ("-c", textwrap.dedent(setup) + "\n" + WORKER_MAIN))


def fsync_full_at(name: str) -> str:
    """Worker setup: the disk fills up when the atomic write of `name` is flushed (os.fsync raises ENOSPC)."""
    return f"""
import errno, os
_real = os.fsync
def _fsync(fd):
    if os.readlink(f"/proc/self/fd/{{fd}}").rsplit("/", 1)[-1].startswith(".{name}."):
        raise OSError(errno.ENOSPC, "No space left on device")
    _real(fd)
os.fsync = _fsync
"""


HDF5_TO_A_FULL_DISK = """
import os
from neuroalign.data.matio import write as _w
_real = _w.write_mat_v73
def _write(path, variables):
    os.symlink("/dev/full", path)
    return _real(path, variables)
_w.V5_MAX_VARIABLE_BYTES = 0
_w.write_mat_v73 = _write
"""


def failing_second_save(exc: str) -> str:
    """Worker setup: the second MAT write (responses.mat) leaves a partial file and raises `exc`."""
    return f"""
from pathlib import Path
import neuroalign.data.writer as _wm
_real = _wm.save_mat
_calls = []
def _failing(path, variables):
    _calls.append(path)
    if len(_calls) == 2:
        Path(path).write_bytes(b"partial")
        raise {exc}
    return _real(path, variables)
_wm.save_mat = _failing
"""
