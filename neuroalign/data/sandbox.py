"""Checking untrusted MAT and NWB files in a short-lived worker process with memory and time limits.

The dashboard's upload check and the CLI's `validate` / `import` decide whether a pair of files
(or an NWB file) is importable by running `load_pair(..., require_trainable=True)` (or the NWB
reader, `neuroalign.data.nwb`) in a child process
(`python -m neuroalign.data.check_worker`), so that a pathological file (a parser bug, a
decompression bomb the header checks miss, a pathological HDF5 layout) can at worst kill that
child, never the server. The child:

* imports only numpy, scipy, h5py and `neuroalign.data` (no torch: the backbone's minimum image
  side is passed in by the parent), with one BLAS/OpenMP thread;
* limits its address space (`RLIMIT_AS`) to its own start-up size plus `memory_mb` while it
  reads the headers and, once the headers declare sizes the file can hold (and within the
  import size cap, $NEUROALIGN_MAX_IMPORT_BYTES), plus what reading and converting exactly
  those arrays needs (`check_worker.data_budget`);
* limits its CPU time (`RLIMIT_CPU`); the parent kills it at the wall-clock limit.

A limit hit is a rejection, reported as one line: "the check of responses.mat exceeded the
300 MB memory limit (set NEUROALIGN_CHECK_MEMORY_MB to allow more); the file is refused".
Limits: $NEUROALIGN_CHECK_MEMORY_MB (default 300) and $NEUROALIGN_CHECK_SECONDS (default 60).
Every other refusal is the same one-line ValueError / FileNotFoundError that `load_pair` gives
in-process. The peak resident memory of the child is measured (`CheckResult.peak_rss_bytes`,
also logged at INFO with `extra={"peak_rss_bytes": ...}`).

An import parses its source once, in the child: the import service (`neuroalign.data.imports`)
has the child write the subject's canonical files into a staging folder inside the data folder
(`op: "stage"`), and the server only renames that folder into place.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neuroalign import settings

logger = logging.getLogger(__name__)

MEMORY_ENV = "NEUROALIGN_CHECK_MEMORY_MB"
SECONDS_ENV = "NEUROALIGN_CHECK_SECONDS"
DEFAULT_MEMORY_MB = settings.SETTINGS[MEMORY_ENV].default
DEFAULT_SECONDS = settings.SETTINGS[SECONDS_ENV].default
#: how the worker is started (after the Python executable)
WORKER_ARGS = ("-m", "neuroalign.data.check_worker")
#: modules the worker must never import (the check must start fast and stay small)
FORBIDDEN_MODULES = ("torch", "streamlit", "plotly", "pandas", "sklearn", "matplotlib", "PIL")


@dataclass
class CheckLimits:
    memory_mb: int
    seconds: float


@dataclass
class CheckResult:
    """What a passed check found: the validation report, optional preview arrays, the cost."""

    report: Any  # neuroalign.data.store.ValidationReport
    preview: dict[str, Any] | None = None
    peak_rss_bytes: int | None = None
    elapsed_s: float = 0.0
    limits: CheckLimits | None = None
    notes: list[str] = field(default_factory=list)


def check_limits(memory_mb: int | None = None, seconds: float | None = None) -> CheckLimits:
    """The limits of a check: the explicit values, else $NEUROALIGN_CHECK_MEMORY_MB / _SECONDS, else defaults."""
    if memory_mb is None:
        memory_mb = settings.get(MEMORY_ENV)
    if seconds is None:
        seconds = settings.get(SECONDS_ENV)
    return CheckLimits(int(memory_mb), float(seconds))


class CheckLimitExceeded(ValueError):
    """The worker hit its memory or time limit: the file is refused (a ValueError, one line)."""


# ---------------------------------------------------------------------------------------------
# parent side


def _worker_env() -> dict[str, str]:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        env[var] = "1"
    env["MALLOC_ARENA_MAX"] = "2"  # per-thread malloc arenas reserve 64 MB of address space each
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([package_root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def _describe(names: list[str]) -> str:
    return " + ".join(names) if names else "the files"


def run_worker(request: dict[str, Any], limits: CheckLimits, names: list[str]) -> tuple[dict[str, Any], int | None, float]:
    """Run one request in a fresh worker; returns (the worker's answer, peak RSS bytes, seconds).

    Raises CheckLimitExceeded when the worker hits a limit or dies, with a one-line message that
    names the file it was reading (`names` when it had not said).
    """
    request = {**request, "memory_mb": limits.memory_mb, "seconds": limits.seconds}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, *WORKER_ARGS], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_worker_env(), close_fds=True,
                            start_new_session=True)
    chunks: dict[str, bytes] = {}

    def drain(key: str, stream: Any) -> None:
        chunks[key] = stream.read()

    readers = [threading.Thread(target=drain, args=(k, s), daemon=True)
               for k, s in (("out", proc.stdout), ("err", proc.stderr))]
    for r in readers:
        r.start()
    try:
        proc.stdin.write(json.dumps(request).encode("utf-8"))
        proc.stdin.close()
    except BrokenPipeError:  # the worker ended before reading its request: judged by its exit below
        logger.debug("check worker closed its input early")
    timed_out = False
    try:
        proc.wait(timeout=limits.seconds)
    except subprocess.TimeoutExpired:
        timed_out = True
        proc.kill()
        proc.wait()
    except BaseException:  # Ctrl-C (the worker has its own session: it would not get the signal) and the like
        proc.kill()
        proc.wait()
        raise
    for r in readers:
        r.join(5)
    elapsed = time.perf_counter() - t0
    lines = []
    for raw in (chunks.get("out") or b"").splitlines():
        try:
            obj = json.loads(raw)
        except ValueError:
            continue
        if isinstance(obj, dict):
            lines.append(obj)
    reading = [o["reading"] for o in lines if "reading" in o]
    where = reading[-1] if reading else _describe(names)
    answer = next((o for o in reversed(lines) if "ok" in o), None)
    peak = answer.get("peak_rss_bytes") if answer else None  # the worker's VmHWM (peak since exec)
    err_tail = " ".join((chunks.get("err") or b"").decode("utf-8", "replace").split())[-300:]
    if err_tail:
        logger.debug("check worker stderr: %s", err_tail)
    logger.info("check of %s: %s in %.2f s, peak RSS %s MB", _describe(names),
                "timed out" if timed_out else ("done" if answer else f"exit {proc.returncode}"), elapsed,
                "?" if peak is None else f"{peak / 1e6:.0f}", extra={"peak_rss_bytes": peak})
    signum = -proc.returncode if proc.returncode is not None and proc.returncode < 0 else None
    if timed_out or (answer is None and signum == getattr(signal, "SIGXCPU", None)):
        raise CheckLimitExceeded(f"the check of {where} exceeded the {limits.seconds:g} s time limit "
                                 f"(set {SECONDS_ENV} to allow more); the file is refused")
    if answer is None:
        if proc.returncode is not None and proc.returncode < 0:
            how = f"was killed ({_signal_name(proc.returncode)})"
        else:
            how = f"stopped unexpectedly (exit code {proc.returncode})"
        if proc.returncode == -signal.SIGKILL:  # the kernel's OOM killer, or a limit
            raise CheckLimitExceeded(f"the check of {where} {how}, most likely at the {limits.memory_mb} MB memory "
                                     f"limit (set {MEMORY_ENV} to allow more); the file is refused")
        raise CheckLimitExceeded(f"the check of {where} {how}; the file cannot be read safely and is refused")
    return answer, peak, elapsed


def _raise_answer(answer: dict[str, Any]) -> None:
    if answer.get("ok"):
        return
    message = answer.get("error") or "the check failed"
    # file names that are not valid UTF-8 (surrogate escapes) shown as escapes: printable anywhere
    message = message.encode("utf-8", "backslashreplace").decode("utf-8")
    kind = answer.get("type")
    if kind == "limit":
        raise CheckLimitExceeded(message)
    if kind == "FileNotFoundError":
        raise FileNotFoundError(message)
    if kind == "FileExistsError":
        raise FileExistsError(message)
    if kind == "OSError" and answer.get("errno"):  # a full disk while staging: the file as it would have been
        code = int(answer["errno"])
        raise OSError(code, os.strerror(code), answer.get("filename"))
    raise ValueError(message)


def run_request(request: dict[str, Any], names: list[str], *, preview_path: str | os.PathLike | None = None,
                memory_mb: int | None = None, seconds: float | None = None) -> tuple[dict[str, Any], CheckResult]:
    """Run a worker request (`check_worker`) under the limits; (the answer, a CheckResult with its
    report when it has one and the preview arrays). Raises what the worker refused with, one line."""
    from neuroalign.data.report import ValidationReport

    limits = check_limits(memory_mb, seconds)
    request = {**request, "preview": None if preview_path is None else os.fspath(preview_path)}
    answer, peak, elapsed = run_worker(request, limits, names)
    _raise_answer(answer)
    report = None
    if "report" in answer:
        fields = answer["report"]
        for key in ("images_shape", "responses_shape", "image_shape"):
            fields[key] = tuple(fields[key])
        report = ValidationReport(**fields)
    preview = None
    if preview_path is not None and report is not None:
        import numpy as np

        with np.load(preview_path, allow_pickle=False) as z:
            preview = {k: z[k] for k in z.files}
    return answer, CheckResult(report, preview, peak, elapsed, limits)


def check_pair(images_path: str | os.PathLike, responses_path: str | os.PathLike, *, preview_path: str | os.PathLike | None = None,
               memory_mb: int | None = None, seconds: float | None = None, require_trainable: bool = True) -> CheckResult:
    """Check a pair of files in a worker (see module docstring); the ValidationReport when importable.

    Raises the one-line ValueError / FileNotFoundError `load_pair` would, or CheckLimitExceeded
    (a ValueError) when the worker hits a limit. With `preview_path`, the worker also writes
    small preview arrays there (`check_worker.preview_arrays`) and `CheckResult.preview` holds them.
    `require_trainable=False` (subject folders already in the data folder, `folder_check`) only
    requires that the pair loads. NWB files and imports: `neuroalign.data.imports`.
    """
    from neuroalign.data.trainable import min_image_side

    images_path, responses_path = Path(images_path), Path(responses_path)
    request = {"op": "check", "kind": "mat", "images": os.fspath(images_path),
               "responses": os.fspath(responses_path), "min_side": min_image_side(),
               "trainable": bool(require_trainable)}
    return run_request(request, [images_path.name, responses_path.name], preview_path=preview_path,
                       memory_mb=memory_mb, seconds=seconds)[1]
