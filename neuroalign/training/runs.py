"""Run directories: the on-disk source of truth for every training run.

`<runs-dir>/<run-id>/` holds `config.json`, `split.json`, `normaliser.json`, `metrics.jsonl`
(append-only), `status.json`, `best.pt`, `last.pt`, `results.json`, `test_outputs.npz`,
`loss_data.mat`, `test_result.mat`. Everything except `metrics.jsonl` is written atomically
(temp file + rename); `metrics.jsonl` is appended line by line and a torn last line (crash
mid-write) is skipped when reading.

Reading back is safe and explicit (`neuroalign.training.run_files`): checkpoints load with `weights_only=True` (tensors and plain
containers only, never arbitrary pickled objects); a damaged (truncated, corrupt, wrong-type)
file raises `RunFileError` (a ValueError) with one line naming the file, what is wrong and what
to do, e.g. "runs/x/config.json is not valid JSON (truncated at byte 812); ...". `load_run`
raises it for `config.json` and `split.json` (nothing can use the run without them) and records
a damaged `status.json` / `results.json` in `RunRecord.problems` instead (resume rewrites the
status, `evaluate` rewrites the results); `list_runs` never raises for what is in the runs
folder and lists a damaged run with `RunInfo.error` (state "unreadable" when its status or
config cannot be read). `read_status` stays lenient (a damaged status reads as {} with a
warning) because every writer merges into it. Unparsable lines of `metrics.jsonl` (a run killed
mid-write) are skipped with a warning.

`config.json` layout: `{"config": TrainConfig.to_dict(), "subject": {"name", "path", "data_hash",
"n_images", "n_neurons", "simulated"}, "code_version", "torch_version", "device", "world_size",
"created", "resumed_from_epoch"}` (`resumed_from_epoch`: the epoch of `last.pt` a resumed run
continued from, or null).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from neuroalign.io_utils import (atomic_write_json, atomic_write_text, disk_full_error, is_disk_full, process_alive,
                                 start_ticks)
from neuroalign.training.run_files import (BEST_CKPT, CHECKPOINT_KEYS, CONFIG_FILE, LAST_CKPT,  # noqa: F401 (re-exported)
                                          LOCK_FILE, LOSS_MAT, METRICS_FILE, NORMALISER_FILE, RESULTS_FILE,
                                          SPLIT_FILE, STATUS_FILE, TEST_MAT, TEST_OUTPUTS, RunFileError,
                                          check_field_types, display_path, load_checkpoint, read_json_file)

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, the status pid check remains
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

STATES = ("queued", "running", "finished", "failed", "stopped", "interrupted")
ACTIVE_STATES = ("queued", "running")

_metrics_lock = threading.Lock()


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def new_run_dir(runs_dir: str | os.PathLike, subject: str) -> Path:
    """Create and return a fresh, uniquely named run folder `<runs_dir>/<UTC time>_<subject>_<hex>`."""
    root = Path(runs_dir)
    root.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", subject).strip("-") or "subject"
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    for _ in range(100):
        path = root / f"{stamp}_{safe}_{secrets.token_hex(3)}"
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise RuntimeError(f"could not create a unique run folder under {root}")  # pragma: no cover


class RunLockedError(ValueError):
    """Another process (or another thread of this one) writes the run folder; the message is one line
    naming the holder."""


_held_locks: dict[Path, list[Any]] = {}  # resolved run folder -> [thread id, depth, fd] of this process
_held_guard = threading.Lock()


def lock_holder(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """Who holds the run's lock, from what the holder wrote into `.lock` (`pid`, `start_ticks`,
    `action`, `since`), when that process is still alive; None otherwise. Reads only: never takes the
    lock, so asking cannot make a starting writer fail."""
    try:
        info = json.loads((Path(run_dir) / LOCK_FILE).read_text(encoding="utf-8") or "null")
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or not process_alive(info.get("pid"), info.get("start_ticks")
                                                       if isinstance(info.get("start_ticks"), int) else None):
        return None
    return info


def check_unlocked(run_dir: str | os.PathLike) -> None:
    """RunLockedError naming the holder when a live process holds the run's lock (`lock_holder`)."""
    info = lock_holder(run_dir)
    if info is not None:
        raise RunLockedError(f"run {Path(run_dir).name} is in use by {_holder_text(info)}; wait for it to end "
                             "or stop it")


def _holder_text(info: dict[str, Any] | None) -> str:
    if not info:
        return "another process"
    action = str(info.get("action") or "a writer")
    return f"{action} (pid {info.get('pid')}, since {info.get('since', '?')})"


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike, action: str) -> Iterator[None]:
    """Hold the exclusive lock of a run folder while writing it (`fcntl.flock` on `<run>/.lock`).

    Every process that writes a run takes it: training, resume, evaluate, delete. A second writer is
    refused at once with `RunLockedError` naming the holder, e.g. "run 2024..._sim-M1_ab12cd is in
    use by train --resume (pid 4242, since 2024-05-01T10:00:00Z); wait for it to end or stop it";
    `action` is what this process records for such messages. Re-entrant within one thread (resume
    evaluates inside its lock); the kernel drops the lock when the process ends, however it ends.
    The holder's `.lock` content is cleared on release; the file itself stays (removing it would let
    two processes lock two different files of one name).
    """
    path = Path(run_dir)
    key = path.resolve()
    me = threading.get_ident()
    with _held_guard:
        held = _held_locks.get(key)
        if held is not None:
            if held[0] != me:
                raise RunLockedError(f"run {path.name} is in use by another thread of this process; "
                                     "wait for it to end")
            held[1] += 1
    if held is not None:
        try:
            yield
        finally:
            with _held_guard:
                held[1] -= 1
        return
    if fcntl is None or not path.is_dir():  # pragma: no cover - no flock; or the caller reports the missing folder
        yield
        return
    fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLockedError(f"run {path.name} is in use by {_holder_text(lock_holder(path))}; wait for it "
                                 "to end or stop it") from None
        info = {"pid": os.getpid(), "start_ticks": start_ticks(os.getpid()), "action": action, "since": _utc_now()}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode("utf-8"), 0)
        except OSError as exc:  # a full disk: the lock holds all the same, only its label is missing
            logger.info("could not record the lock holder in %s: %s", display_path(path / LOCK_FILE), exc)
        with _held_guard:
            _held_locks[key] = [me, 1, fd]
        try:
            yield
        finally:
            with _held_guard:
                _held_locks.pop(key, None)
            try:
                os.ftruncate(fd, 0)
            except OSError:
                pass
    finally:
        os.close(fd)  # releases the flock


def is_run_dir(path: str | os.PathLike) -> bool:
    path = Path(path)
    return path.is_dir() and ((path / STATUS_FILE).is_file() or (path / CONFIG_FILE).is_file())


def read_status(run_dir: str | os.PathLike, strict: bool = False) -> dict[str, Any]:
    """`status.json` ({} when missing). A damaged file is {} with a warning (every writer merges into
    the status and must be able to replace a damaged one), or RunFileError with `strict` -- which also
    refuses valid JSON without a state a run can be in (`STATES`), e.g. `"state": "bogus"`."""
    path = Path(run_dir) / STATUS_FILE
    try:
        status = read_json_file(path) or {}
        if strict and status and status.get("state") not in STATES:
            found = f"has state {json.dumps(status['state'], default=str)[:40]}" if "state" in status \
                else "lacks a state"
            raise RunFileError(path, f"{found}; expected one of {', '.join(STATES)}")
        return status
    except RunFileError as exc:
        if strict:
            raise
        logger.warning("%s", exc)
        return {}


def write_status(run_dir: str | os.PathLike, state: str, message: str = "", **fields: Any) -> dict[str, Any]:
    """Atomically replace `status.json`, keeping earlier fields (progress, epoch, ...) not given."""
    if state not in STATES:
        raise ValueError(f"status state must be one of {STATES}, got {state!r}")
    status = read_status(run_dir)
    status.update(fields)
    status.update({"state": state, "message": message, "updated": _utc_now()})
    if state in ACTIVE_STATES:  # the writer's pid and start time: a reused pid is not this run's process
        status["pid"], status["pid_start"] = os.getpid(), start_ticks(os.getpid())
    status.setdefault("progress", 0.0)
    atomic_write_json(Path(run_dir) / STATUS_FILE, status)
    return status


def append_metrics(run_dir: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append one JSON object as a line to `metrics.jsonl` (non-finite floats become null).

    When the file does not end with a newline (a process was killed mid-line), the new line starts
    on a line of its own, so the torn line stays one skipped line instead of spoiling this one.
    """
    clean = {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in record.items()}
    line = json.dumps(clean, default=float, allow_nan=False) + "\n"
    path = Path(run_dir) / METRICS_FILE
    try:
        with _metrics_lock, open(path, "a+b") as fh:
            if fh.tell() > 0:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    line = "\n" + line
            fh.write(line.encode("utf-8"))
            fh.flush()
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full_error(path, exc) from None
        raise


def status_process_alive(status: dict[str, Any]) -> bool:
    """Whether the process a status names (`pid`, with its start time `pid_start` when recorded) still
    runs: a pid the system gave to another process since does not count."""
    ticks = status.get("pid_start")
    return process_alive(status.get("pid"), ticks if isinstance(ticks, int) and not isinstance(ticks, bool) else None)


def truncate_metrics(run_dir: str | os.PathLike, epoch: int) -> int:
    """Keep only the `metrics.jsonl` records of epochs <= `epoch` (what a resume from a checkpoint of
    that epoch continues after), dropping what was logged after the checkpoint and torn lines;
    rewritten atomically. Returns the number of records dropped."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return 0
    records = read_metrics(run_dir)

    def keep(record: dict[str, Any]) -> bool:
        value = record.get("epoch")
        return not isinstance(value, (int, float)) or value <= epoch

    kept = [r for r in records if keep(r)]
    raw_lines = sum(1 for line in path.read_bytes().split(b"\n") if line.strip())
    if len(kept) == raw_lines:
        return 0
    with _metrics_lock:
        atomic_write_text(path, "".join(json.dumps(r, allow_nan=False) + "\n" for r in kept))
    return raw_lines - len(kept)


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """All complete records of `metrics.jsonl`, in order.

    Lines that are not a JSON object (the torn last line of a run killed mid-write, or a torn line
    a resumed run wrote after) are skipped with one warning naming them. RunFileError when the
    file cannot be read or holds several lines and none of them is a record (not a metrics log).
    """
    path = Path(run_dir) / METRICS_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return []
    except IsADirectoryError:
        raise RunFileError(path, "is a folder, not a file") from None
    except OSError as exc:
        raise RunFileError(path, f"cannot be read ({exc.strerror or type(exc).__name__})") from None
    out, bad, last = [], [], 0
    lines = raw.split(b"\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        last = number
        try:
            obj = json.loads(line.decode("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            obj = None
        if isinstance(obj, dict):
            out.append(obj)
        else:
            bad.append(number)
    if bad:
        if not out and len(bad) > 1:
            raise RunFileError(path, f"holds no metrics record in {len(bad)} lines (expected one JSON object "
                               "per line)", hint="")
        torn = "the last line (cut short: the run was killed mid-write?)" if bad == [last] else \
            f"line(s) {', '.join(map(str, bad[:5]))}{' ...' if len(bad) > 5 else ''}"
        logger.warning("%s: skipped %s that %s not a JSON record", display_path(path), torn,
                       "is" if len(bad) == 1 else "are")
    return out


def write_split(run_dir: str | os.PathLike, split: dict[str, np.ndarray]) -> None:
    atomic_write_json(Path(run_dir) / SPLIT_FILE, {k: [int(i) for i in split[k]] for k in ("train", "val", "test")})


def read_split(run_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """train/val/test image indices; FileNotFoundError when missing, RunFileError when damaged."""
    path = Path(run_dir) / SPLIT_FILE
    data = read_json_file(path)
    if data is None:
        raise FileNotFoundError(f"{display_path(path)} not found")
    missing = [k for k in ("train", "val", "test") if k not in data]
    if missing:
        raise RunFileError(path, f"lacks {', '.join(missing)}; expected lists of image indices train, val, test")
    out = {}
    for k in ("train", "val", "test"):
        values = data[k]
        if not isinstance(values, list) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                                   for v in values):
            raise RunFileError(path, f"has a {k!r} entry that is not a list of image indices (non-negative integers)")
        out[k] = np.asarray(values, dtype=np.int64)
    for k, values in out.items():
        if len(np.unique(values)) != len(values):
            raise RunFileError(path, f"lists an image twice in {k!r}; expected each image index at most once")
    names = ("train", "val", "test")
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            both = np.intersect1d(out[a], out[b])
            if len(both):
                shown = ", ".join(map(str, both[:5].tolist())) + (" ..." if len(both) > 5 else "")
                raise RunFileError(path, f"has {len(both)} image(s) in both {a!r} and {b!r} (index {shown}); "
                                   "expected disjoint train/val/test splits")
    return out


@dataclass
class RunRecord:
    """Everything stored in one run folder (files that do not exist yet are None/empty)."""

    path: Path
    config: dict[str, Any]
    status: dict[str, Any]
    results: dict[str, Any] | None
    split: dict[str, np.ndarray] | None = None
    #: file name -> one-line message for a damaged status.json / results.json (read as {} / None)
    problems: dict[str, str] = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        return self.path.name

    def train_config(self):
        """The run's `TrainConfig`, checked like any other input: RunFileError (one line naming
        config.json and the field) when a setting has the wrong JSON type or is out of range."""
        from neuroalign.config import TrainConfig

        path = self.path / CONFIG_FILE
        if "config" not in self.config:
            raise RunFileError(path, "lacks 'config' (the training settings)")
        check_field_types(TrainConfig, self.config["config"], path)
        try:
            config = TrainConfig.from_dict(self.config["config"])
            config.validate()
        except (ValueError, TypeError) as exc:
            raise RunFileError(path, f"holds settings that are not valid ({' '.join(str(exc).split())})") from None
        return config

    def metrics(self) -> list[dict[str, Any]]:
        return read_metrics(self.path)

    def test_outputs(self) -> dict[str, np.ndarray] | None:
        """`test_indices (n,)`, `image_maps (n,16,64)`, `neural_maps (n,16,64)`, `similarity (n,n)`
        (image rows x neural columns), `ssim (n,)`; None before evaluation."""
        path = self.path / TEST_OUTPUTS
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except MemoryError:
            raise RunFileError(path, "does not fit in memory", hint="") from None
        except Exception as exc:  # noqa: BLE001 - zipfile/numpy raise many types for damaged files
            raise RunFileError(path, f"is truncated or corrupt ({type(exc).__name__}: "
                               f"{' '.join(str(exc).split())[:120]})") from None


def load_run(run_dir: str | os.PathLike) -> RunRecord:
    """Everything in a run folder. RunFileError when `config.json` or `split.json` is damaged; a
    damaged `status.json` / `results.json` reads as {} / None with its message in `problems`."""
    path = Path(run_dir)
    if not is_run_dir(path):
        raise FileNotFoundError(f"{path} is not a run folder (expected {STATUS_FILE} or {CONFIG_FILE} inside)")
    config = read_json_file(path / CONFIG_FILE) or {}
    _check_config_record(path / CONFIG_FILE, config)
    try:
        split = read_split(path)
    except FileNotFoundError:
        split = None
    problems: dict[str, str] = {}
    status: dict[str, Any] = {}
    results = None
    try:
        status = read_status(path, strict=True)
    except RunFileError as exc:
        problems[STATUS_FILE] = str(exc)
    try:
        results = read_json_file(path / RESULTS_FILE)
    except RunFileError as exc:
        problems[RESULTS_FILE] = str(exc)
    for message in problems.values():
        logger.warning("%s", message)
    return RunRecord(path=path, config=config, status=status, results=results, split=split, problems=problems)


#: config.json's "subject" fields that evaluate and resume use, with their JSON types
_SUBJECT_FIELDS = {"name": str, "path": str, "data_hash": str, "n_images": int, "n_neurons": int}


def _check_config_record(path: Path, config: dict[str, Any]) -> None:
    """RunFileError when config.json's "config" / "subject" parts (if present) have the wrong JSON type."""
    if "config" in config and not isinstance(config["config"], dict):
        raise RunFileError(path, f"has config = {type(config['config']).__name__}; expected an object of settings")
    if "subject" not in config:
        return
    subject = config["subject"]
    if not isinstance(subject, dict):
        raise RunFileError(path, f"has subject = {type(subject).__name__}; expected an object (name, path, data_hash)")
    for name, kind in _SUBJECT_FIELDS.items():
        value = subject.get(name)
        if name in subject and (not isinstance(value, kind) or isinstance(value, bool)):
            raise RunFileError(path, f"has subject.{name} = {json.dumps(value, default=str)[:40]}; expected "
                               f"{'a string' if kind is str else 'an integer'}")


@dataclass
class RunInfo:
    """One line of the runs table (cheap: reads only the small JSON files)."""

    run_id: str
    path: Path
    subject: str
    state: str
    message: str
    created: str | None
    preset: str | None
    progress: float
    metrics: dict[str, float | None] = field(default_factory=dict)
    #: one line when a file of the run is damaged (state "unreadable" when status/config cannot be read)
    error: str | None = None


def _summary(results: dict[str, Any] | None) -> dict[str, float | None]:
    if not results or "test" not in results:
        return {}
    test = results["test"]
    base = results.get("baselines") or {}
    ridge = base.get("ridge") or {}
    return {
        "test_top1_image_to_neural": test.get("image_to_neural", {}).get("top1"),
        "test_top1_neural_to_image": test.get("neural_to_image", {}).get("top1"),
        "chance_top1": test.get("chance_top1"),
        "n_test": test.get("n"),
        "ridge_top1_image_to_neural": ridge.get("image_to_neural", {}).get("top1"),
        **best_linear(base),
        "mean_ssim": (results.get("ssim") or {}).get("mean"),
    }


LINEAR_READOUTS = ("ridge", "ridge_random", "ridge_backbone")  # evaluation.baselines.LINEAR_BASELINES


def best_linear(baselines: dict[str, Any]) -> dict[str, Any]:
    """The best linear readout's test top-1 per direction and its baseline name(s) (README's and the
    dashboard's yardstick): `best_linear_top1_<direction>`, `best_linear_<direction>`."""
    out: dict[str, Any] = {}
    for direction in ("image_to_neural", "neural_to_image"):
        scores = {}
        for name in LINEAR_READOUTS:
            value = ((baselines.get(name) or {}).get(direction) or {}).get("top1") \
                if isinstance(baselines.get(name), dict) else None
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                scores[name] = float(value)
        best = max(scores, key=scores.get) if scores else None
        out[f"best_linear_top1_{direction}"] = scores.get(best) if best else None
        out[f"best_linear_{direction}"] = best
    return out


def list_runs(runs_dir: str | os.PathLike) -> list[RunInfo]:
    """All run folders under `runs_dir`, newest first."""
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    infos = []
    for path in sorted(root.iterdir(), reverse=True):
        try:
            if not is_run_dir(path):
                continue
            infos.append(_run_info(path))
        except Exception as exc:  # noqa: BLE001 - one damaged run must not hide the others
            text = " ".join(str(exc).split()) or type(exc).__name__
            logger.warning("run %s: %s", path.name, text)
            infos.append(RunInfo(run_id=path.name, path=path, subject="?", state="unreadable", message=text,
                                 created=None, preset=None, progress=0.0, error=text))
    return infos


def _run_info(path: Path) -> RunInfo:
    errors: dict[str, str] = {}

    def read(name: str) -> dict[str, Any]:
        try:
            return (read_status(path, strict=True) if name == STATUS_FILE else read_json_file(path / name)) or {}
        except RunFileError as exc:
            errors[name] = str(exc)
            return {}

    cfg, status, results = read(CONFIG_FILE), read(STATUS_FILE), read(RESULTS_FILE)
    subject = cfg.get("subject") if isinstance(cfg.get("subject"), dict) else {}
    config = cfg.get("config") if isinstance(cfg.get("config"), dict) else {}
    try:
        progress = float(status.get("progress") or 0.0)
    except (TypeError, ValueError):
        progress = 0.0
    try:
        metrics = _summary(results)
    except (AttributeError, TypeError) as exc:  # valid JSON of an unexpected layout
        errors[RESULTS_FILE] = str(RunFileError(path / RESULTS_FILE, f"has an unexpected layout ({exc})"))
        metrics = {}
    error = " | ".join(errors.values()) or None
    unreadable = CONFIG_FILE in errors or STATUS_FILE in errors
    return RunInfo(
        run_id=path.name, path=path, subject=str(subject.get("name", "?")),
        state="unreadable" if unreadable else str(status.get("state", "unknown")),
        message=error if unreadable else str(status.get("message", "")),
        created=cfg.get("created"), preset=config.get("preset"), progress=progress, metrics=metrics, error=error)


def delete_run(run_dir: str | os.PathLike) -> None:
    """Remove a run folder (refuses folders that are not runs, and runs still active in this process)."""
    path = Path(run_dir)
    if not is_run_dir(path):
        raise ValueError(f"{path} is not a run folder (expected {STATUS_FILE} or {CONFIG_FILE} inside)")
    with run_lock(path, "delete"):
        status = read_status(path)
        if status.get("state") in ACTIVE_STATES and status_process_alive(status):
            raise ValueError(f"run {path.name} is {status['state']}; stop it before deleting")
        shutil.rmtree(path)


def mark_interrupted(runs_dir: str | os.PathLike, live_run_dirs: Iterable[str | os.PathLike] = ()) -> list[Path]:
    """Mark runs whose status says queued/running but that nobody is running any more as `interrupted`.

    A run counts as live when it is in `live_run_dirs` (jobs of this process) or when its status was
    written by another process that is still alive (e.g. a CLI run next to the dashboard).
    Returns the folders that were marked.
    """
    live = {Path(p).resolve() for p in live_run_dirs}
    marked = []
    for info in list_runs(runs_dir):
        if info.state not in ACTIVE_STATES or info.path.resolve() in live:
            continue
        status = read_status(info.path)
        if (status.get("pid") != os.getpid() and status_process_alive(status)) or lock_holder(info.path):
            continue
        write_status(info.path, "interrupted",
                     f"was {info.state} when its process ended; resume continues from the last checkpoint")
        marked.append(info.path)
    return marked
