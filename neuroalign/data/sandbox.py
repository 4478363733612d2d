"""Checking untrusted MAT files in a short-lived worker process with memory and time limits.

The dashboard's upload check and the CLI's `validate` / `import` decide whether a pair of files
is importable by running `load_pair(..., require_trainable=True)` in a child process
(`python -m neuroalign.data.sandbox`), so that a pathological file (a parser bug, a
decompression bomb the header checks miss, a pathological HDF5 layout) can at worst kill that
child, never the server. The child:

* imports only numpy, scipy, h5py and `neuroalign.data` (no torch: the backbone's minimum image
  side is passed in by the parent), with one BLAS/OpenMP thread;
* limits its address space (`RLIMIT_AS`) to its own start-up size plus `memory_mb` while it
  reads the headers and, once the headers declare sizes the file can hold (and within the
  import size cap, $NEUROALIGN_MAX_IMPORT_BYTES), plus what reading and converting exactly
  those arrays needs (`data_budget`);
* limits its CPU time (`RLIMIT_CPU`); the parent kills it at the wall-clock limit.

A limit hit is a rejection, reported as one line: "the check of responses.mat exceeded the
300 MB memory limit (set NEUROALIGN_CHECK_MEMORY_MB to allow more); the file is refused".
Limits: $NEUROALIGN_CHECK_MEMORY_MB (default 300) and $NEUROALIGN_CHECK_SECONDS (default 60).
Every other refusal is the same one-line ValueError / FileNotFoundError that `load_pair` gives
in-process. The peak resident memory of the child is measured (`CheckResult.peak_rss_bytes`,
also logged at INFO with `extra={"peak_rss_bytes": ...}`).

Only the check that decides runs in the child: once it has passed, the caller imports in its own
process (the same bytes parse the same way; the upload verifies them by SHA-256), so the store's
atomic write and its error handling stay where they are.
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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MEMORY_ENV = "NEUROALIGN_CHECK_MEMORY_MB"
SECONDS_ENV = "NEUROALIGN_CHECK_SECONDS"
DEFAULT_MEMORY_MB = 300
DEFAULT_SECONDS = 60.0
#: modules the worker must never import (the check must start fast and stay small)
FORBIDDEN_MODULES = ("torch", "streamlit", "plotly", "pandas", "sklearn", "matplotlib", "PIL")
#: bytes the data phase may use per declared element beyond the raw array: up to three float32
#: copies (conversion, layout, one-row-per-image aggregation)
_BYTES_PER_ELEMENT = 12
_PREVIEW_IMAGES = 8
_PREVIEW_RASTER_IMAGES = 200


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


def _positive(env: str, text: str, kind: type) -> float:
    try:
        value = kind(float(text))
    except ValueError:
        raise ValueError(f"{env}={text!r} is not a number; expected e.g. {kind(DEFAULT_MEMORY_MB)}") from None
    if value <= 0:
        raise ValueError(f"{env}={text!r} must be positive")
    return value


def check_limits(memory_mb: int | None = None, seconds: float | None = None) -> CheckLimits:
    """The limits of a check: the explicit values, else $NEUROALIGN_CHECK_MEMORY_MB / _SECONDS, else defaults."""
    if memory_mb is None:
        text = os.environ.get(MEMORY_ENV, "").strip()
        memory_mb = int(_positive(MEMORY_ENV, text, int)) if text else DEFAULT_MEMORY_MB
    if seconds is None:
        text = os.environ.get(SECONDS_ENV, "").strip()
        seconds = float(_positive(SECONDS_ENV, text, float)) if text else DEFAULT_SECONDS
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
    proc = subprocess.Popen([sys.executable, "-m", "neuroalign.data.sandbox"], stdin=subprocess.PIPE,
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
    except BrokenPipeError:
        pass
    deadline = t0 + limits.seconds
    timed_out, rusage, status = False, None, None
    while True:
        if hasattr(os, "wait4"):
            pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
        elif proc.poll() is not None:  # pragma: no cover - platforms without wait4
            break
        if time.perf_counter() > deadline:
            timed_out = True
            proc.kill()
            if hasattr(os, "wait4"):
                _, status, rusage = os.wait4(proc.pid, 0)
            else:  # pragma: no cover
                proc.wait()
            break
        time.sleep(0.01)
    if status is not None:
        proc.returncode = os.waitstatus_to_exitcode(status)
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
    peak = answer.get("peak_rss_bytes") if answer else None
    if peak is None and rusage is not None and not answer:  # killed: the kernel's count (an upper bound)
        peak = int(rusage.ru_maxrss) * (1 if sys.platform == "darwin" else 1024)
    err_tail = " ".join((chunks.get("err") or b"").decode("utf-8", "replace").split())[-300:]
    if err_tail:
        logger.debug("check worker stderr: %s", err_tail)
    logger.info("check of %s: %s in %.2f s, peak RSS %s MB", _describe(names),
                "timed out" if timed_out else ("done" if answer else f"exit {proc.returncode}"), elapsed,
                "?" if peak is None else f"{peak / 1e6:.0f}", extra={"peak_rss_bytes": peak})
    cpu_killed = proc.returncode is not None and proc.returncode < 0 and -proc.returncode in (
        getattr(signal, "SIGXCPU", -1), signal.SIGKILL)
    if timed_out or (answer is None and cpu_killed and -proc.returncode == getattr(signal, "SIGXCPU", -1)):
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
    raise ValueError(message)


def check_pair(images_path: str | os.PathLike, responses_path: str | os.PathLike, *, preview_path: str | os.PathLike | None = None,
               memory_mb: int | None = None, seconds: float | None = None) -> CheckResult:
    """Check a pair of files in a worker (see module docstring); the ValidationReport when importable.

    Raises the one-line ValueError / FileNotFoundError `load_pair` would, or CheckLimitExceeded
    (a ValueError) when the worker hits a limit. With `preview_path`, the worker also writes
    small preview arrays there (`preview_arrays`) and `CheckResult.preview` holds them.
    """
    from neuroalign.data.store import ValidationReport
    from neuroalign.data.trainable import min_image_side

    limits = check_limits(memory_mb, seconds)
    images_path, responses_path = Path(images_path), Path(responses_path)
    request = {"op": "check", "images": os.fspath(images_path), "responses": os.fspath(responses_path),
               "min_side": min_image_side(), "preview": None if preview_path is None else os.fspath(preview_path)}
    answer, peak, elapsed = run_worker(request, limits, [images_path.name, responses_path.name])
    _raise_answer(answer)
    fields = answer["report"]
    for key in ("images_shape", "responses_shape", "image_shape"):
        fields[key] = tuple(fields[key])
    report = ValidationReport(**fields)
    preview = None
    if preview_path is not None:
        import numpy as np

        with np.load(preview_path, allow_pickle=False) as z:
            preview = {k: z[k] for k in z.files}
    return CheckResult(report, preview, peak, elapsed, limits)


# ---------------------------------------------------------------------------------------------
# worker side


def _proc_status(key: str) -> int | None:
    """A byte count from /proc/self/status (Linux: "VmSize", "VmHWM"), else None."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _vm_size() -> int | None:
    """This process's virtual memory size in bytes (Linux), else None."""
    return _proc_status("VmSize")


def _set_memory(limit: int | None) -> None:
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return
    if limit is not None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.RLIM_INFINITY))


def _set_cpu(seconds: float) -> None:
    try:
        import resource
    except ImportError:  # pragma: no cover
        return
    soft = max(1, int(seconds + 1))
    resource.setrlimit(resource.RLIMIT_CPU, (soft, soft + 5))


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def data_budget(declared: list[tuple[tuple[int, ...], str]]) -> int:
    """Bytes reading and converting arrays of these declared (shape, dtype) needs beyond the headers."""
    from neuroalign.data.matio.common import bytes_of

    total = 0
    for shape, dtype in declared:
        n = 1
        for s in shape:
            n *= max(int(s), 0)
        total += bytes_of(shape, dtype) + _BYTES_PER_ELEMENT * n
    return total


def human(n: int) -> str:
    from neuroalign.data.matio.common import human as _human

    return _human(n)


def _memory_error_in(exc: BaseException) -> bool:
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, MemoryError):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def _file_in_traceback(exc: BaseException, names: set[str]) -> str | None:
    """The last of `names` that a frame of the traceback was reading (a local `path`)."""
    found = None
    while exc is not None:
        tb = exc.__traceback__
        while tb is not None:
            p = tb.tb_frame.f_locals.get("path")
            if isinstance(p, Path) and p.name in names:
                found = p.name
            tb = tb.tb_next
        exc = exc.__cause__
    return found


def preview_arrays(subject: Any) -> dict[str, Any]:
    """Small arrays to preview a checked subject without sending it whole to the parent:
    `images` (k, H, W) float32 evenly spread over the subject with their `image_ids`, and
    `rows` (<= 200 images evenly spread, K) of the responses with their `row_ids` (image ids)."""
    import numpy as np

    n = subject.n_images
    pick = np.unique(np.linspace(0, n - 1, num=min(_PREVIEW_IMAGES, n)).round().astype(np.int64))
    rows = np.unique(np.linspace(0, n - 1, num=min(n, _PREVIEW_RASTER_IMAGES)).round().astype(np.int64))
    ids = np.asarray(subject.image_ids, dtype=np.int64)
    return {"images": np.ascontiguousarray(subject.images[pick, 0], dtype=np.float32), "image_ids": ids[pick],
            "rows": np.ascontiguousarray(subject.responses[rows], dtype=np.float32), "row_ids": ids[rows]}


def _declared(images: Path, responses: Path) -> list[tuple[tuple[int, ...], str]]:
    """Declared (shape, dtype) of every variable the load will read, after the header checks passed."""
    from neuroalign.data.matio import peek_mat
    from neuroalign.data.subject import IMAGE_VARIABLES, OPTIONAL_RESPONSE_VARIABLES, RESPONSE_VARIABLE

    img = peek_mat(images)
    out = [img.variables[v] for v in IMAGE_VARIABLES if v in img.variables][:1]
    resp = peek_mat(responses)
    for v in (RESPONSE_VARIABLE,) + OPTIONAL_RESPONSE_VARIABLES:
        if v in resp.variables:
            out.append(resp.variables[v])
    if not any(v in resp.variables for v in (RESPONSE_VARIABLE, "responses_repeats")):
        size = responses.stat().st_size  # a struct (Stringer et al.): bounded by the file it is read from
        out.append(((4 * size,), "uint8"))
    return out


_phase: dict[str, int] = {}


def _check(request: dict[str, Any], base: int | None) -> dict[str, Any]:
    from neuroalign.data import trainable
    from neuroalign.data.matio import peek_mat
    from neuroalign.data.store import ValidationReport
    from neuroalign.data.subject import _decide_from_headers, _pick_image_variable, load_pair

    trainable.use_min_image_side(int(request["min_side"]))
    images, responses = Path(request["images"]), Path(request["responses"])
    memory = int(request["memory_mb"]) * 1_000_000
    _emit({"reading": images.name})
    img_info = peek_mat(images)
    img_var = _pick_image_variable(images, img_info)
    _emit({"reading": responses.name})
    resp_info = peek_mat(responses)
    if "responses" in resp_info.variables or "responses_repeats" in resp_info.variables:
        _decide_from_headers(images, responses, img_info, img_var, resp_info, True)  # sizes the file can hold
    if base is not None:
        budget = data_budget(_declared(images, responses))
        _phase["data_budget"] = budget
        _set_memory(base + memory + budget)
    _emit({"reading": f"{images.name} + {responses.name}"})
    subject = load_pair(images, responses, name="validate", require_trainable=True)
    report = asdict(ValidationReport.from_subject(subject))
    if request.get("preview"):
        import numpy as np

        np.savez(request["preview"], **preview_arrays(subject))
    return {"ok": True, "report": report}


def _serve(request: dict[str, Any]) -> dict[str, Any]:
    """Run one request under the limits; the answer the parent reads (never raises)."""
    base = _vm_size()
    memory = int(request["memory_mb"]) * 1_000_000
    names = {Path(request[k]).name for k in ("images", "responses") if request.get(k)}
    try:
        _set_cpu(float(request["seconds"]))
        if base is not None:
            _set_memory(base + memory)
        if request.get("op") != "check":
            raise ValueError(f"unknown request {request.get('op')!r}")
        return _check(request, base)
    except BaseException as exc:  # noqa: BLE001 - everything becomes an answer
        where = _file_in_traceback(exc, names) or " + ".join(sorted(names))
        if _memory_error_in(exc):
            budget = _phase.get("data_budget")
            beyond = f" beyond the {human(budget)} its headers declare" if budget else ""
            return {"ok": False, "type": "limit",
                    "error": f"the check of {where} exceeded the {request['memory_mb']} MB memory limit{beyond} "
                             f"(set {MEMORY_ENV} to allow more); the file is refused"}
        if isinstance(exc, (ValueError, FileNotFoundError, FileExistsError)):
            text = " ".join(str(exc).split()) or type(exc).__name__
            return {"ok": False, "type": type(exc).__name__ if not isinstance(exc, ValueError) else "ValueError",
                    "error": text}
        if isinstance(exc, OSError):
            name = Path(exc.filename).name if exc.filename else where
            return {"ok": False, "type": "ValueError", "error": f"{name}: {exc.strerror or type(exc).__name__}"}
        detail = " ".join(str(exc).split())[:160]
        return {"ok": False, "type": "ValueError",
                "error": f"{where}: cannot be read ({type(exc).__name__}: {detail}); the file may be corrupt"}


def main() -> int:
    request = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    answer = _serve(request)
    # the peak of this process since exec (ru_maxrss would include the parent's pages before exec)
    answer["peak_rss_bytes"] = _proc_status("VmHWM")
    _emit(answer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
