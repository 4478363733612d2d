"""Atomic file writes: write to a temporary file in the same folder, fsync, then `os.replace`.

A crash or an exception mid-write never leaves a half-written file under the final name.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _atomic(path: str | os.PathLike, write: Callable[[io.BufferedWriter], None]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file normal permissions
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
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
    from scipy.io import savemat

    return _atomic(path, lambda fh: savemat(fh, variables, do_compression=False))


def atomic_savez(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """np.savez atomically; `path` should end in .npz."""
    return _atomic(path, lambda fh: np.savez(fh, **arrays))


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> Path:
    """torch.save atomically. Only tensors and plain containers, so `weights_only=True` loads it."""
    import torch

    def write(fh: io.BufferedWriter) -> None:
        torch.save(obj, fh)

    return _atomic(path, write)
