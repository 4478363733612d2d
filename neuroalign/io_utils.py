"""Atomic file writes (temporary file in the same folder, fsync, then `os.replace`) and the few
process-level facts that file writers share: the umask-based default permissions and whether
the process that wrote a file (a pid in a status file or a folder name) is still alive.

A crash or an exception mid-write never leaves a half-written file under the final name.
The umask is read once, at import: `os.umask` can only be read by setting it, which would race
with other threads creating files (the dashboard runs jobs in threads).
"""

from __future__ import annotations

import errno
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
from scipy.io import savemat


def json_number(value: Any, default: Any = None) -> Any:
    """`value` as a float when a JSON file holds a real number there (not a bool, not a string), else
    `default`: status, history and config files are written by other processes and read as untrusted."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def default_mode(directory: bool = False) -> int:
    """Permissions a new file (0o666) or folder (0o777) gets under the process umask."""
    return (0o777 if directory else 0o666) & ~_UMASK


def pid_alive(pid: Any) -> bool:
    """Whether process `pid` (an int; anything else counts as gone) still exists on this machine.

    A process we may not signal (PermissionError) or any other doubt (OSError) counts as alive,
    so that nothing of a running process is removed or marked interrupted; a pid beyond the
    platform's range (OverflowError) cannot be a process.
    """
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except OSError:  # PermissionError included: it exists, owned by someone else
        return True
    return True


_DISK_FULL = frozenset(e for e in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) if e is not None)


def _proc_stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (raises OSError / IndexError)."""
    return Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace").rsplit(")", 1)[1].split()


def start_ticks(pid: int) -> int | None:
    """The start time of process `pid` in clock ticks since boot (Linux /proc), None elsewhere."""
    try:
        return int(_proc_stat(pid)[19])
    except (OSError, IndexError, ValueError):
        return None


def process_alive(pid: Any, ticks: int | None = None) -> bool:
    """Whether process `pid` still runs: it exists, is not a zombie and, when `ticks` (its start
    time, see `start_ticks`) is known, started at that time (so a reused pid does not count)."""
    if not pid_alive(pid):
        return False
    try:
        fields = _proc_stat(pid)
    except FileNotFoundError:
        return not Path("/proc/self/stat").exists()  # no /proc at all: trust pid_alive
    except (OSError, IndexError):
        return True
    if fields and fields[0] in ("Z", "X"):
        return False
    if ticks is not None and len(fields) > 19:
        try:
            return int(fields[19]) == int(ticks)
        except ValueError:
            return True
    return True


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether `exc`, or an exception it was raised from or during, is a full disk or quota (ENOSPC,
    EDQUOT). torch.save reports one as "RuntimeError: [enforce fail at inline_container.cc...]" raised
    while handling the OSError of the write."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def disk_full_error(path: str | os.PathLike, exc: BaseException | None = None) -> OSError:
    """The one-line OSError for a write to `path` that found the disk (or quota) full."""
    code = next((e.errno for e in _chain(exc) if isinstance(e, OSError) and e.errno in _DISK_FULL), errno.ENOSPC)
    return OSError(code, os.strerror(code), str(path))


def _chain(exc: BaseException | None) -> list[BaseException]:
    out: list[BaseException] = []
    while exc is not None and exc not in out:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def _atomic(path: str | os.PathLike, write: Callable[[io.BufferedWriter], None]) -> Path:
    """Write through `write` into a temporary file next to `path`, fsync, rename. A full disk (also as
    torch's RuntimeError) becomes one OSError naming `path`; the temporary file is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, default_mode())  # mkstemp creates 0600; give the file normal permissions
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if is_disk_full(exc):
            raise disk_full_error(path, exc) from None
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return _atomic(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write `obj` as JSON (numpy scalars/arrays and Paths converted; NaN written as null)."""
    text = json.dumps(_nan_to_none(obj), indent=2, default=_json_default, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, np.floating) and not np.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_none(v) for v in obj]
    return obj


def atomic_savemat(path: str | os.PathLike, variables: dict[str, Any]) -> Path:
    """Save a MATLAB v5 file atomically (scipy.io.savemat)."""
    return _atomic(path, lambda fh: savemat(fh, variables, do_compression=False))


def atomic_savez(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """np.savez atomically; `path` should end in .npz."""
    return _atomic(path, lambda fh: np.savez(fh, **arrays))


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> Path:
    """torch.save atomically. Only tensors and plain containers, so `weights_only=True` loads it."""
    import torch  # heavy, and the data package (which uses this module) must not import it

    def write(fh: io.BufferedWriter) -> None:
        torch.save(obj, fh)

    return _atomic(path, write)
