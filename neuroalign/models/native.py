"""Build and load the fused CPU kernels of the folded attention (`csrc/folded_cpu.cpp`).

The kernels are compiled once per machine with the system C++ compiler through
`torch.utils.cpp_extension` (about 20 s) into PyTorch's extension cache (``$TORCH_EXTENSIONS_DIR``,
default ``~/.cache/torch_extensions``). The build name carries a hash of the source, the compiler
flags, the torch version and this CPU's model and instruction-set flags: code built with
``-march=native`` on one machine is never loaded on another (a shared home directory on a cluster
would otherwise hand a node an illegal instruction).

Nothing is downloaded. When there is no compiler, or the build fails, `load()` returns None once
with a logged warning and the folded path keeps using its eager PyTorch implementation.
``NEUROALIGN_NATIVE=off`` turns the kernels off; it is read at every call (`native_mode`), and a
call can override it (`load(mode)`, `folded_attention_readout(..., native_mode=...)`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
import sysconfig
import threading
import time
from pathlib import Path
from types import ModuleType

import torch

from neuroalign import settings

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("csrc") / "folded_cpu.cpp"
NATIVE_ENV = "NEUROALIGN_NATIVE"
NATIVE_MODES = settings.NATIVE_MODES

_lock = threading.Lock()
_state: dict[str, object] = {}  # a cache, not a switch: "module": ModuleType | None once a load was attempted, "error": str


def native_mode(override: str | None = None) -> str:
    """The native mode of one call: `override` when given, else $NEUROALIGN_NATIVE as it is now
    (default "auto": use the kernels on a CPU when they build; "off": never)."""
    if override is None:
        return settings.get(NATIVE_ENV)
    return settings.check_choice(override, NATIVE_MODES, "native mode")


def set_native_mode(mode: str) -> None:
    """Set $NEUROALIGN_NATIVE for this process and the workers it starts (benchmarks and tests;
    nothing in the package calls it -- a call passes `native_mode=` instead)."""
    os.environ[NATIVE_ENV] = native_mode(mode)


def compile_flags() -> list[str]:
    flags = ["-O3", "-fopenmp", "-fopenmp-simd", "-fno-math-errno", "-fno-trapping-math"]
    if platform.machine().lower() in ("x86_64", "amd64"):
        flags += ["-march=native", "-mprefer-vector-width=512"]
    elif platform.machine().lower() in ("aarch64", "arm64"):
        flags += ["-mcpu=native"]
    return flags


def _cpu_identity() -> str:
    """Model name and feature flags of this CPU (what -march=native compiles for)."""
    try:
        lines = Path("/proc/cpuinfo").read_text(errors="replace").splitlines()
    except OSError:
        return f"{platform.machine()}|{platform.processor()}"
    keep = [ln for ln in lines if ln.split(":")[0].strip() in ("model name", "flags", "Features", "CPU part")]
    return "\n".join(sorted(set(keep))) or platform.machine()


def build_name() -> str:
    digest = hashlib.sha256()
    for part in (SOURCE.read_bytes(), " ".join(compile_flags()).encode(), torch.__version__.encode(),
                 _cpu_identity().encode()):
        digest.update(part)
        digest.update(b"\0")
    return f"neuroalign_folded_{digest.hexdigest()[:16]}"


def load(mode: str | None = None) -> ModuleType | None:
    """The compiled kernel module, building it on first use; None when unavailable or turned off
    (native mode `mode`, see `native_mode`)."""
    if native_mode(mode) == "off":
        return None
    if "module" in _state:
        return _state["module"]  # type: ignore[return-value]
    with _lock:
        if "module" not in _state:
            _state["module"] = _build()
    return _state["module"]  # type: ignore[return-value]


def _ensure_ninja_on_path() -> None:
    """torch's extension builder runs `ninja` from PATH; the PyPI `ninja` package (requirements.txt)
    may sit in this interpreter's scripts folder without that folder being on PATH (pyenv shims, an
    unactivated venv)."""
    if shutil.which("ninja"):
        return
    candidates = []
    try:
        import ninja  # type: ignore[import-not-found]  # optional PyPI package, not a package module

        candidates.append(getattr(ninja, "BIN_DIR", ""))
    except ImportError:
        pass
    candidates.append(sysconfig.get_path("scripts"))
    for folder in candidates:
        if folder and shutil.which("ninja", path=folder):
            os.environ["PATH"] = folder + os.pathsep + os.environ.get("PATH", "")
            return


STALE_LOCK_S = 600  # a build takes 20 s to 2 min; a lock this old was left by a killed build


def _clear_stale_lock(name: str) -> None:
    """torch's builder waits for ever while its build folder holds a `lock` file, and a build
    interrupted by Ctrl-C or a killed server leaves one behind: remove it when it is old."""
    from torch.utils import cpp_extension  # pulls in setuptools: only when a build is attempted

    try:
        folder = Path(cpp_extension._get_build_directory(name, False))
    except Exception:  # a private helper of torch; without it, nothing to clear
        return
    lock = folder / "lock"
    try:
        age = time.time() - lock.stat().st_mtime
    except OSError:
        return
    if age > STALE_LOCK_S:
        logger.warning("removing a build lock left %.0f min ago by an interrupted build: %s", age / 60, lock)
        lock.unlink(missing_ok=True)


def _build() -> ModuleType | None:
    try:
        from torch.utils import cpp_extension  # pulls in setuptools: only when a build is attempted

        _ensure_ninja_on_path()
        name = build_name()
        _clear_stale_lock(name)
        logger.info("loading the fused CPU kernels %s (compiled once per machine, ~20 s)", name)
        ldflags = ["-fopenmp"] if platform.system() == "Linux" else []
        return cpp_extension.load(name=name, sources=[str(SOURCE)], extra_cflags=compile_flags(),
                                  extra_ldflags=ldflags, verbose=False)
    except Exception as exc:  # no compiler, no headers, a failed build: keep the eager path
        _state["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
        logger.warning("fused CPU kernels unavailable (%s); the folded attention uses its eager "
                       "PyTorch path", _state["error"])
        return None


def status() -> dict[str, object]:
    """What `load()` found: mode, whether loaded, and the build error if any (for benchmarks/UI)."""
    return {"mode": native_mode(), "attempted": "module" in _state,
            "loaded": _state.get("module") is not None, "error": _state.get("error")}
